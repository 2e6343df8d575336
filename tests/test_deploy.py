"""Deployment files and examples: what can be checked without a Docker engine.

The image itself is not built here (no Docker engine on CI); its install steps are exercised
by installing the wheel the same way in the packaging check described in the README.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_has_redis_with_aof_and_five_worker_replicas() -> None:
    """compose.yaml parses; Redis runs with AOF; workers have deploy.replicas 5."""
    doc = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = doc["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["worker"]["deploy"]["replicas"] == 5
    assert services["worker"]["command"][0] == "worker"


def test_compose_file_matches_the_compose_spec() -> None:
    """compose.yaml parses under the Compose specification (compose-spec, the bindings of
    the compose_spec crate: unknown keys, wrong types and bad values are refused), and the
    same check refuses a misspelt key, so it can fail."""
    from compose_spec import PyCompose

    text = (ROOT / "compose.yaml").read_text()
    assert set(PyCompose.from_yaml(text).service_names()) >= {"redis", "worker"}
    with pytest.raises(ValueError, match="replicaz"):
        PyCompose.from_yaml(text.replace("replicas: 5", "replicaz: 5"))


@pytest.mark.parametrize("version", ["1.28", "latest"])
def test_k8s_manifests_match_the_api_schema(version: str) -> None:
    """Every document in deploy/k8s/*.yaml is valid against the Kubernetes API's own OpenAPI
    schema (kubernetes-validate, strict: an unknown or misspelt field fails), on the oldest
    version we claim and the newest the library knows."""
    import kubernetes_validate
    from kubernetes_validate.utils import latest_version

    want = latest_version() if version == "latest" else version
    docs = [
        (path.name, doc)
        for path in sorted((ROOT / "deploy/k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    assert docs
    for name, doc in docs:
        try:
            kubernetes_validate.validate(doc, want, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{name} ({doc.get('kind')}), Kubernetes {want}: {exc}") from None


def test_k8s_worker_deployment() -> None:
    """The k8s manifest is a non-root Deployment of 5 replicas; liveness asks the worker
    process (``lb alive`` on the file its ``--alive-file`` writes, on a writable /tmp), never
    Redis; readiness may ask Redis; a pinned tag pulled only when absent."""
    doc = yaml.safe_load((ROOT / "deploy/k8s/worker.yaml").read_text())
    assert doc["kind"] == "Deployment" and doc["spec"]["replicas"] == 5
    pod = doc["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = pod["containers"][0]
    live = c["livenessProbe"]["exec"]["command"]
    assert live[:2] == ["lb", "alive"] and "status" not in live
    path = live[live.index("--file") + 1]
    assert c["args"][c["args"].index("--alive-file") + 1] == path
    assert any(path.startswith(m["mountPath"]) for m in c["volumeMounts"])
    assert {v["name"] for v in pod["volumes"]} >= {m["name"] for m in c["volumeMounts"]}
    ready = c["readinessProbe"]["httpGet"]
    assert ready["path"] == "/readyz"  # the worker's own endpoint, on its --metrics-port
    port = int(c["args"][c["args"].index("--metrics-port") + 1])
    assert {"name": ready["port"], "containerPort": port} in c["ports"]
    notes = doc["spec"]["template"]["metadata"]["annotations"]
    assert notes["prometheus.io/port"] == str(port)
    assert not c["image"].endswith(":latest") and c["imagePullPolicy"] == "IfNotPresent"


def test_the_autoscaler_scales_the_worker_deployment_on_an_exported_metric() -> None:
    """hpa.yaml targets the worker Deployment with a metric the exporter serves, and the
    exporter's manifest runs `lb exporter` on the port its Service and annotation name."""
    from lb.broker.fleet_metrics import FleetCollector

    hpa = yaml.safe_load((ROOT / "deploy/k8s/hpa.yaml").read_text())
    worker = yaml.safe_load((ROOT / "deploy/k8s/worker.yaml").read_text())
    assert hpa["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    name = hpa["spec"]["metrics"][0]["external"]["metric"]["name"]
    assert name in FleetCollector.NAMES
    dep, svc = yaml.safe_load_all((ROOT / "deploy/k8s/exporter.yaml").read_text())
    c = dep["spec"]["template"]["spec"]["containers"][0]
    port = int(c["args"][c["args"].index("--port") + 1])
    assert c["args"][0] == "exporter" and c["ports"][0]["containerPort"] == port
    assert dep["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_the_grafana_dashboard_uses_only_metrics_lb_exports() -> None:
    """deploy/grafana/lb-fleet.json parses, shows the spread, the backlog and takeovers, and
    every metric its queries name is one a worker or the exporter serves (a renamed metric
    fails here, not on an operator's screen)."""
    import json
    import re

    from lb.broker.fleet_metrics import FleetCollector
    from lb.sdk.metrics import NAMES

    dash = json.loads((ROOT / "deploy/grafana/lb-fleet.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    assert "spread" in titles and "backlog" in titles and "takeover" in titles
    known = set(NAMES) | set(FleetCollector.NAMES)
    functions = {"sum", "by", "rate", "increase", "histogram_quantile", "le", "worker", "group",
                 "state", "cause", "reason", "function", "type", "outcome"}  # fmt: skip
    for expr in exprs:
        bare = re.sub(r'\{[^}]*\}|\[[^\]]*\]|"[^"]*"', "", expr)
        names = set(re.findall(r"[a-z_][a-z0-9_]*", bare)) - functions
        assert names <= known, (expr, names - known)


def test_dockerfile_final_stage_is_slim_non_root_with_healthcheck() -> None:
    """The final stage runs as a non-root user, has a HEALTHCHECK, installs no compilers."""
    text = (ROOT / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM ") :]
    assert "USER lb" in final and "HEALTHCHECK" in final
    health = final[final.index("HEALTHCHECK") :].split("\n")[1]
    assert '"alive"' in health and '"status"' not in health  # the worker, not Redis
    for bad in ("gcc", "build-essential", "apt-get install"):
        assert bad not in final
    assert "--no-index" in final


def test_examples_run(redis_url: str, prefix: str) -> None:
    """The load-balancing example: a worker and an invoker of three waited calls."""
    env = {**os.environ, "LB_REDIS_URL": redis_url, "LB_PREFIX": prefix, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [sys.executable, "examples/load_balancing/worker.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(0.5)
        out = subprocess.run(
            [
                sys.executable,
                "examples/load_balancing/invoke.py",
                "--n",
                "3",
                "--max-cost",
                "1",
                "--wait",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("attempts=1") == 3, out.stdout
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(15) == 0
