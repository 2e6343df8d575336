"""``python -m chaos --seed N --duration S [--short] [--workers 3] [--rate 150] [--json PATH]``.

Exit status: 0 when every must-be-zero figure is zero, 1 when one is not, 2 when the harness
itself could not run.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from chaos.runner import Options, run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--short", action="store_true", help="a subset of the faults, 100/s")
    ap.add_argument("--workers", type=int, default=3, choices=range(2, 9), metavar="2..8")
    ap.add_argument("--rate", type=float, default=None, help="invocations per second")
    ap.add_argument("--json", dest="json_path", default=None, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, journal, AOF)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log faults, dump the history")
    ap.add_argument(
        "--sabotage", action="store_true", help="self-test: corrupt results on purpose (exit 1)"
    )
    a = ap.parse_args(argv)
    rate = a.rate if a.rate is not None else (100.0 if a.short else 150.0)
    if rate <= 0 or a.duration <= 0:
        ap.error("--rate and --duration must be positive")
    opts = Options(
        a.seed, a.duration, a.short, a.workers, rate, a.json_path, a.keep, a.verbose, a.sabotage
    )
    try:
        code, _ = run(opts)
    except KeyboardInterrupt:
        return 130
    except Exception:
        traceback.print_exc()
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
