"""The full command-line fuzz run (issue 16 item 7): >= 1000 seeded malformed or odd inputs through the CLI.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/fuzz.py [--n 1000] [--seed 0] [--keep DIR] [--show 20]

Cases come from ``tests/fuzzing.py`` (the CI test ``tests/test_fuzz.py`` runs the first 240 of the same
sequence). Prints the date, machine and command, then one row per family (cases, passed, failed, seconds) and
every failure with its reason; exit status 1 on any failure. Families whose verb or option the CLI lacks
(``calibrate``, ``--rig``, ``--ir-video``) are listed as skipped.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import fuzzing  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="number of cases (default 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="write the cases here and keep them (default: a temporary folder, removed)")
    ap.add_argument("--show", type=int, default=50, help="failures listed in full (default 50)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    families = fuzzing.available_families()
    skipped = [f for f in fuzzing.FAMILIES.values() if f not in families]
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="alignfuse_fuzz_"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"alignfuse CLI fuzz | {datetime.datetime.now().isoformat(timespec='seconds')} | {platform.node()} | "
          f"{platform.platform()} | Python {platform.python_version()} | torch {torch.__version__} | "
          f"{os.cpu_count()} CPUs, 1 torch thread")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"{args.n} cases, seed {args.seed}, {len(families)} families, {len(fuzzing.IMAGE_KINDS)} image kinds\n")

    rows: dict[str, collections.Counter] = {f.name: collections.Counter() for f in families}
    expect: dict[str, collections.Counter] = {f.name: collections.Counter() for f in families}
    seconds: dict[str, float] = collections.defaultdict(float)
    failures: list[str] = []
    t0 = time.perf_counter()
    try:
        for i in range(args.n):
            name = families[i % len(families)].name
            try:
                case = fuzzing.generate_case(i, args.seed, root, families)
            except Exception as exc:  # noqa: BLE001 - a generator bug is reported, not fatal
                rows[name]["failed"] += 1
                failures.append(f"{i:04d}-{name}: case generation failed ({type(exc).__name__}: {exc})")
                continue
            outcome = fuzzing.run_case(case)
            problems = fuzzing.check(case, outcome)
            seconds[name] += outcome.seconds
            rows[name]["cases"] += 1
            expect[name][_outcome_label(case, outcome)] += 1
            if problems:
                rows[name]["failed"] += 1
                failures.append(f"{case.id} ({case.note}): {'; '.join(problems)}\n    argv: {' '.join(case.argv)}")
            else:
                rows[name]["passed"] += 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - t0

    width = max(map(len, rows)) + 2
    print(f"{'family':<{width}}{'cases':>6}{'passed':>8}{'failed':>8}  {'ok / user error / batch':<24}{'seconds':>9}")
    for name, c in rows.items():
        e = expect[name]
        split = f"{e['ok']} / {e['user-error']} / {e['batch']}"
        print(f"{name:<{width}}{c['cases']:>6}{c['passed']:>8}{c['failed']:>8}  {split:<24}{seconds[name]:>9.1f}")
    total = sum((rows[n] for n in rows), collections.Counter())
    e = sum((expect[n] for n in expect), collections.Counter())
    print(f"{'total':<{width}}{total['cases']:>6}{total['passed']:>8}{total['failed']:>8}  "
          f"{e['ok']} / {e['user-error']} / {e['batch']:<13}{wall:>9.1f}")
    for f in skipped:
        print(f"skipped: {f.name} ({f.what}; the CLI lacks its verb/option)")
    if failures:
        print(f"\n{len(failures)} failures:")
        for line in failures[: args.show]:
            print(f"  {line}")
        if len(failures) > args.show:
            print(f"  ... and {len(failures) - args.show} more")
    else:
        print("\nno failures: no traceback, no internal error, every error one line naming its file, "
              "every good pair of a batch written")
    return 1 if failures else 0


def _outcome_label(case: fuzzing.Case, outcome: fuzzing.Outcome) -> str:
    if case.expect == fuzzing.BATCH:
        return "batch"
    return "ok" if outcome.code == 0 else "user-error"


if __name__ == "__main__":
    sys.exit(main())
