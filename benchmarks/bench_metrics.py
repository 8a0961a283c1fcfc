"""Time every fusion and registration metric on a 640x480 greyscale pair.

Usage::

    python benchmarks/bench_metrics.py [--repeat 5] [--json out.json]

The inputs are the reference pair01 (tests/data/metric_reference) tiled to 480x640, with F = round(0.6 VI + 0.4 IR);
if the test data is missing, smoothed random images are used. Each metric is timed on its own (no shared work),
then all fusion metrics together through ``compute_fusion_metrics`` (shared work). Times are the median of
``--repeat`` runs, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

from alignfuse.metrics import FUSION_METRIC_NAMES, compute_fusion_metrics, compute_registration_metrics
from alignfuse.metrics import epe, mse, mutual_information, ncc

H, W = 480, 640
DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "metric_reference"


def make_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    if (DATA / "pair01_vi.png").exists():
        from PIL import Image

        def tile(name: str) -> np.ndarray:
            a = np.asarray(Image.open(DATA / name))
            return np.tile(a, (-(-H // a.shape[0]), -(-W // a.shape[1])))[:H, :W]

        vi, ir, source = tile("pair01_vi.png"), tile("pair01_ir.png"), "pair01 tiled"
    else:
        from scipy import ndimage

        rng = np.random.default_rng(0)
        vi = np.clip(ndimage.gaussian_filter(rng.normal(128, 200, (H, W)), 2), 0, 255).round().astype(np.uint8)
        ir = np.clip(ndimage.gaussian_filter(rng.normal(100, 200, (H, W)), 3), 0, 255).round().astype(np.uint8)
        source = "synthetic"
    f = np.floor(0.6 * vi + 0.4 * ir + 0.5).astype(np.uint8)
    return vi, ir, f, source


def timed(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)

    vi, ir, f, source = make_inputs()
    compute_fusion_metrics(vi, ir, f)  # warm-up
    rows: dict[str, float] = {}
    for name in FUSION_METRIC_NAMES:
        rows[name] = timed(lambda n=name: compute_fusion_metrics(vi, ir, f, [n]), args.repeat)
    rows["ALL fusion (compute_fusion_metrics)"] = timed(lambda: compute_fusion_metrics(vi, ir, f), args.repeat)

    a, b = vi / 255.0, ir / 255.0
    rng = np.random.default_rng(0)
    fp, fg = rng.normal(size=(2, 2, H, W))
    valid = np.ones((H, W), bool)
    rows["reg: mse"] = timed(lambda: mse(a, b), args.repeat)
    rows["reg: ncc"] = timed(lambda: ncc(a, b), args.repeat)
    rows["reg: mutual_information"] = timed(lambda: mutual_information(a, b), args.repeat)
    rows["reg: epe"] = timed(lambda: epe(fp, fg, valid), args.repeat)
    rows["ALL registration"] = timed(lambda: compute_registration_metrics(a, b, fp, fg, valid), args.repeat)

    width = max(len(k) for k in rows)
    print(f"Metric timings on {H}x{W} greyscale ({source}), median of {args.repeat}, "
          f"{platform.processor() or platform.machine()}, numpy {np.__version__}")
    print(f"| {'metric'.ljust(width)} | time (ms) |")
    print(f"|{'-' * (width + 2)}|----------:|")
    for k, v in rows.items():
        print(f"| {k.ljust(width)} | {v:9.1f} |")
    result = {"size": [H, W], "inputs": source, "repeat": args.repeat, "median_ms": rows,
              "numpy": np.__version__, "machine": platform.machine()}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
