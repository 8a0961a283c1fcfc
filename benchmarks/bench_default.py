"""Speed of the default pipeline as users run it: folder mode (marginal time per pair) and one CLI call.

    python benchmarks/bench_default.py [--pairs 8] [--threads 2]

In one run, on 640x480 pairs made from a committed sample (the IR shifted by 12 px, so registration has work):

* **folder mode**: ``alignfuse fuse --ir-dir --vis-dir`` on 2 and on ``--pairs`` pairs, each a fresh process;
  marginal time per pair = (t_N - t_2) / (N - 2) (import, model loading and the first-call warm-up cancel out);
* **one pair**: a whole ``alignfuse fuse IR VIS -o OUT`` process (import and model loading included);
* for ``default``, ``identity+average`` (the I/O floor) and, in-process, the paper-size UMF-CMGR configuration
  (CPSTN + MRRN + DIFN at the paper's widths, random weights: speed does not depend on them).

Ratios are printed against ``default``, all measured in this run.
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

import numpy as np

SAMPLE = Path(__file__).resolve().parents[1] / "samples"


def _make_pairs(folder: Path, n: int) -> None:
    import cv2

    from alignfuse import io

    pair = io.load_pair(SAMPLE / "ir" / "FLIR_00211.jpg", SAMPLE / "vi" / "FLIR_00211.jpg")
    ir = cv2.resize(pair.ir, (640, 480), interpolation=cv2.INTER_CUBIC)
    vis = cv2.resize(pair.vis, (640, 480), interpolation=cv2.INTER_CUBIC)
    ir = np.roll(ir, (12, -12), axis=(0, 1))
    for sub in ("ir", "vi"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        io.write_image(folder / "ir" / f"p{i:02d}.png", np.clip(ir, 0, 1))
        io.write_image(folder / "vi" / f"p{i:02d}.png", np.clip(vis, 0, 1))


def _run(args: list[str], threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "alignfuse.cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _paper_umf_seconds(threads: int, repeat: int) -> float:
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_speed import _pair, _umf  # noqa: PLC0415  (the paper-size configuration, shared)

    torch.set_num_threads(threads)
    pipe = _umf("paper")
    ir, vis = _pair()
    with torch.no_grad():
        pipe(ir, vis)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            pipe(ir, vis)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "two", Path(tmp) / "many"
        _make_pairs(small, 2)
        _make_pairs(big, args.pairs)
        for model in ("default", "identity+average"):
            t2 = min(_run(["fuse", "--ir-dir", str(small / "ir"), "--vis-dir", str(small / "vi"), "-o",
                           str(Path(tmp) / f"o2{model}"), "--model", model], args.threads) for _ in range(args.repeat))
            tn = min(_run(["fuse", "--ir-dir", str(big / "ir"), "--vis-dir", str(big / "vi"), "-o",
                           str(Path(tmp) / f"on{model}"), "--model", model], args.threads) for _ in range(args.repeat))
            one = min(_run(["fuse", str(small / "ir" / "p00.png"), str(small / "vi" / "p00.png"), "-o",
                            str(Path(tmp) / f"one{model}.png"), "--model", model], args.threads)
                      for _ in range(args.repeat))
            rows[model] = ((tn - t2) / (args.pairs - 2), one)
    paper = _paper_umf_seconds(args.threads, args.repeat)
    base = rows["default"][0]
    print(f"640x480, {args.threads} threads, {args.pairs} pairs; {os.uname().machine}")
    print("| pipeline | folder mode, s / pair (marginal) | one-pair CLI call, s | x default (per pair) |")
    print("|---|---|---|---|")
    for model, (per, one) in rows.items():
        print(f"| `{model}` | {per:.3f} | {one:.2f} | {per / base:.2f} |")
    print(f"| UMF-CMGR paper-size (in-process, no I/O) | {paper:.3f} | n/a | {paper / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
