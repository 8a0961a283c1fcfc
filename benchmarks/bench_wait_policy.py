"""The default under CPU contention: the OpenMP wait policy of torch's thread pool.

    python benchmarks/bench_wait_policy.py [--threads 2] [--busy 1] [--repeat 3]

torch runs its CPU kernels on an OpenMP thread pool. Under the runtime's default (ACTIVE) wait policy an idle pool
thread spins for its next task instead of sleeping; when another process holds one of the cores, the spinning
threads take turns with the thread that has work, and every parallel region waits for the slowest. ``import
alignfuse`` therefore sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already sets it (it takes effect when
torch is first imported, so not when a program imported torch before alignfuse).

This script times whole ``alignfuse fuse IR VIS -o OUT`` calls (the 640x480 pair of ``bench_default.py``, import and
model loading included) under each policy, with nothing else running and beside ``--busy`` CPU-bound processes (pure
Python loops), the two policies alternated, and prints the medians and the ratio ACTIVE / PASSIVE per condition.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_default import _make_pairs  # noqa: E402  (the shared 640x480 pair)

POLICIES = ("ACTIVE", "PASSIVE")


def _fuse_seconds(folder: Path, out: Path, threads: int, policy: str) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": policy}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "alignfuse.cli", "fuse", str(folder / "ir" / "p00.png"),
                    str(folder / "vi" / "p00.png"), "-o", str(out)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the timed call")
    ap.add_argument("--busy", type=int, default=1, help="CPU-bound processes beside it in the loaded condition")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    times: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _make_pairs(folder, 1)
        for busy in (0, args.busy):
            burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
            try:
                for _ in range(args.repeat):
                    for policy in POLICIES:
                        t = _fuse_seconds(folder, folder / "out.png", args.threads, policy)
                        times.setdefault((busy, policy), []).append(t)
            finally:
                for p in burners:
                    p.kill()
                    p.wait()
    print(f"one `alignfuse fuse` call (640x480, default pipeline), {args.threads} torch threads, {os.cpu_count()} "
          f"cores; median of {args.repeat}; {os.uname().machine}")
    print("| processes beside it | ACTIVE, s | PASSIVE, s | ACTIVE / PASSIVE |")
    print("|---|---|---|---|")
    for busy in (0, args.busy):
        active, passive = (statistics.median(times[(busy, p)]) for p in POLICIES)
        print(f"| {busy} | {active:.2f} | {passive:.2f} | {active / passive:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
