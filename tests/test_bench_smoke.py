"""The lb benchmark runs end to end on a tiny size (numbers unchecked: not a speed test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_lb_bench_runs_tiny(redis_url: str, tmp_path: Path) -> None:
    """`python -m bench.lb_bench` on 200 calls prints every figure it promises."""
    out = tmp_path / "lb.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.lb_bench",
            "--redis-url",
            redis_url,
            "--size",
            "200",
            "--runs",
            "1",
            "--latency-count",
            "20",
            "--skip-recovery",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    for key in (
        "enqueue_one_per_s",
        "enqueue_batch_per_s",
        "drain_per_s",
        "e2e_one_per_s",
        "e2e_batch_per_s",
        "drain_per_s_c128_aecho",
        "cpu_total_us",
        "lat_p50_ms",
        "lat_p99_ms",
        "ceiling_per_s",
        "bytes_per_promise",
        "bytes_per_pending_promise",
        "bytes_per_settled_promise",
        "redis_gb_per_day_at_1k_per_s",
        "redis_gb_steady_at_1k_per_s",
        "hot_drain_per_s",
        "hot_drain_metrics_per_s",
        "metrics_cost_ratio",
        "hot_drain_traced_per_s",
        "tracing_cost_ratio",
    ):
        assert data[key] > 0, key
    assert data["stream_len"] == 0
