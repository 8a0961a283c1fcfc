"""Peak resident memory of one pipeline run on a large pair (default 3840x2160, colour VIS).

Usage::

    python benchmarks/bench_memory.py [--model umf-cmgr] [--size 3840x2160] [--random-weights] [--json out.json]

``--random-weights`` builds the network pipelines from their CPU configurations with random
weights (memory and time do not depend on the weight values), so the measurement works before
weights ship. Peak RSS is the process maximum (``resource.getrusage``), measured in a fresh
process per call, and includes the Python interpreter, torch and the input images.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time

import numpy as np
import torch


def _random_pipeline(name: str):
    from alignfuse.model_pipelines import REGISTER_LONG_SIDE, NetFuser
    from alignfuse.models.cpstn import CPSTNTranslator
    from alignfuse.models.difn import build_difn
    from alignfuse.models.mrrn import build_mrrn
    from alignfuse.models.rfvif import RFVIF
    from alignfuse.pipeline import Pipeline
    from alignfuse.registration import DeformableRegistrar

    torch.manual_seed(0)
    if name == "umf-cmgr":
        return Pipeline(CPSTNTranslator(config="cpu").eval(), DeformableRegistrar(build_mrrn("cpu").eval()),
                        NetFuser(build_difn("cpu")), register_long_side=REGISTER_LONG_SIDE, name=name)
    if name == "rfvif":
        return Pipeline(fuser=NetFuser(RFVIF("cpu"), output="fused"), name=name)
    raise SystemExit(f"--random-weights supports umf-cmgr and rfvif, not {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="umf-cmgr")
    parser.add_argument("--size", default="3840x2160", help="WxH")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from scipy.ndimage import gaussian_filter

    from alignfuse.api import fuse_arrays, load_pipeline

    w, h = (int(v) for v in args.size.lower().split("x"))
    rng = np.random.default_rng(0)
    base = gaussian_filter(rng.random((h // 8, w // 8)), 2).repeat(8, 0).repeat(8, 1)[:h, :w]
    base = ((base - base.min()) / (base.max() - base.min())).astype(np.float32)
    ir = np.roll(base, (3, -5), axis=(0, 1))
    vis = np.stack([base, base * 0.9, base * 0.8], axis=-1).astype(np.float32)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pipe = _random_pipeline(args.model) if args.random_weights else load_pipeline(args.model)
    t0 = time.perf_counter()
    result = fuse_arrays(ir, vis, pipe, warn=False)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {"model": args.model, "size": [w, h], "random_weights": args.random_weights, "seconds": round(seconds, 2),
           "peak_rss_mib": round(peak, 1), "rss_before_pipeline_mib": round(rss0, 1),
           "fused_shape": list(result.fused.shape), "threads": args.threads, "machine": platform.platform()}
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
