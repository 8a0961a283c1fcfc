"""Wall time of the fusers alone on one 640x480 pair (aligned input), all in the same run.

    python benchmarks/bench_fusers.py [--threads 2] [--repeat 7] [--weights-dir W]

Each row is the median of ``--repeat`` calls of the fuser stage on (1, 1, 480, 640) tensors after one warm-up:
the learned fusers as the pipelines run them (``NetFuser``: eval mode, channels-last, no gradients), the
classical ones from ``alignfuse.baselines``. Model loading is excluded. ``--weights-dir W`` adds the learned fusers
with the weights in ``W`` (a training run's exports) as rows of their own, beside the shipped ones.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from datetime import date

import torch

from alignfuse.baselines import FUSERS
from alignfuse.learned_stages import LEARNED_FUSERS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--weights-dir", help="also time the learned fusers with the weights in this folder")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    ir, vis = torch.rand(1, 1, 480, 640, generator=g), torch.rand(1, 1, 480, 640, generator=g)
    fusers = {"pwf": LEARNED_FUSERS["pwf"](None), "difn": LEARNED_FUSERS["difn"](None),
              "gff": FUSERS["gff"](), "laplacian": FUSERS["laplacian"](), "average": FUSERS["average"]()}
    if args.weights_dir:
        from alignfuse.learned_stages import weights_path

        for name in ("pwf", "difn"):
            if weights_path(name, args.weights_dir).exists():
                fusers[f"{name} ({args.weights_dir})"] = LEARNED_FUSERS[name](args.weights_dir)
    rows = {}
    for name, fuser in fusers.items():
        fuser(ir, vis)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fuser(ir, vis)
            times.append(time.perf_counter() - t0)
        rows[name] = statistics.median(times)
    print(f"# fusers, 640x480, {args.threads} threads, median of {args.repeat}; {date.today()}; "
          f"{platform.processor() or platform.machine()}; torch {torch.__version__}")
    extra = f" --weights-dir {args.weights_dir}" if args.weights_dir else ""
    print(f"# command: python benchmarks/bench_fusers.py --threads {args.threads} --repeat {args.repeat}{extra}\n")
    print("| fuser | s / pair | vs difn |")
    print("|---|---|---|")
    for name, sec in rows.items():
        print(f"| {name} | {sec:.4f} | {sec / rows['difn']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
