"""Run ``mypy --strict`` on the ``lb`` package as it is installed.

The package is assembled from top-level folders (``broker/`` installs as ``lb.broker``, and so
on: ``[tool.setuptools.package-dir]`` in pyproject.toml), a mapping mypy cannot read. This
script lays the installed shape out as a tree of symbolic links under ``build/typecheck`` and
checks it together with the repository's own tools (``chaos``). Run from the repository root:
``python tools/typecheck.py``; extra arguments go to mypy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def lay_out() -> Path:
    """Mirror pyproject's package-dir mapping as links; returns the directory to search."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-dir"
    ]
    shutil.rmtree(TREE, ignore_errors=True)
    pkg_root = TREE / "lb"
    pkg_root.mkdir(parents=True)
    for entry in (ROOT / mapping["lb"]).iterdir():
        if entry.name != "__pycache__":
            (pkg_root / entry.name).symlink_to(entry)
    for name, folder in mapping.items():
        if name == "lb":
            continue
        link = TREE.joinpath(*name.split("."))
        link.symlink_to(ROOT / folder, target_is_directory=True)
    return TREE


def main() -> int:
    tree = lay_out()
    env = {**os.environ, "MYPYPATH": str(tree)}
    cmd = [sys.executable, "-m", "mypy", "-p", "lb", "-p", "chaos", *sys.argv[1:]]
    return subprocess.call(cmd, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
