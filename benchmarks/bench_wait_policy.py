"""The default under CPU contention: the OpenMP wait policy of torch's thread pool.

    python benchmarks/bench_wait_policy.py [--threads 2] [--busy 1] [--repeat 3]

torch runs its CPU kernels on an OpenMP thread pool. By default an idle pool thread spins for a few milliseconds
before it sleeps; when another process holds one of the cores, the spinning threads take turns with the thread that
has work, and every parallel region waits for the slowest. ``OMP_WAIT_POLICY=PASSIVE`` (set before torch is first
imported) makes them sleep at once, which costs time on a quiet machine. alignfuse sets neither: the trade-off is
measured here and stated in the README.

This script times whole ``alignfuse fuse IR VIS -o OUT`` calls (the 640x480 pair of ``bench_default.py``, import and
model loading included) under three settings of libgomp (the OpenMP runtime torch's wheels ship), alternated:

* ``runtime default``: what torch does when nothing is set, spin ~300,000 times (a few ms) before sleeping
  (set here explicitly as ``OMP_WAIT_POLICY=ACTIVE GOMP_SPINCOUNT=300000``, so that the user's own environment
  does not leak in);
* ``short spin``: ``GOMP_SPINCOUNT=10000`` (~0.1 ms);
* ``PASSIVE``: sleep at once.

Each with nothing else running and beside 1..``--busy`` CPU-bound processes (pure Python loops); it prints the medians
and each setting's time relative to the runtime default.
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

SETTINGS = {"runtime default": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "300000"},
            "short spin": {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "10000"},
            "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}


def _fuse_seconds(folder: Path, out: Path, threads: int, setting: dict[str, str]) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(OMP_NUM_THREADS=str(threads), **setting)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "alignfuse.cli", "fuse", str(folder / "ir" / "p00.png"),
                    str(folder / "vi" / "p00.png"), "-o", str(out)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the timed call")
    ap.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside it, at most (0..busy are run)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    times: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _make_pairs(folder, 1)
        for busy in range(args.busy + 1):
            burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
            try:
                for _ in range(args.repeat):
                    for name, setting in SETTINGS.items():
                        t = _fuse_seconds(folder, folder / "out.png", args.threads, setting)
                        times.setdefault((busy, name), []).append(t)
            finally:
                for p in burners:
                    p.kill()
                    p.wait()
    print(f"one `alignfuse fuse` call (640x480, default pipeline), {args.threads} torch threads, {os.cpu_count()} "
          f"cores; median of {args.repeat}, s (x the runtime default); {os.uname().machine}")
    print("| processes beside it | " + " | ".join(SETTINGS) + " |")
    print("|---|" + "---|" * len(SETTINGS))
    for busy in range(args.busy + 1):
        med = {name: statistics.median(times[(busy, name)]) for name in SETTINGS}
        base = med["runtime default"]
        print(f"| {busy} | " + " | ".join(f"{t:.2f} ({t / base:.2f})" for t in med.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
