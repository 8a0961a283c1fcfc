"""Wall time of registration and full pipelines on one 640x480 pair, CPU configs vs paper-size configs.

Usage::

    python benchmarks/bench_speed.py [--repeat 3] [--threads 2] [--json out.json]

Every network row is timed twice in the same run: with the CPU configuration we ship and with the
paper-size configuration of the same code (random weights: speed does not depend on them), so the
ratio is measured, not assumed. Model construction and loading are excluded; each timing is the
median of ``--repeat`` runs after one warm-up. Rows:

* ``register``: translator + registrar (UMF: CPSTN + global phase correlation + MRRN + warp at the
  working resolution, field resized to full resolution) as ``Pipeline.register``; ``umf-cmgr[cpu]`` is
  the arrangement the ``umf-cmgr`` pipeline ships (CPSTN ``cpu``, MRRN ``cpu-mind``, DIFN ``cpu``),
  ``umf-cmgr[paper]`` the paper-size configurations of the same code;
* ``pipeline``: the whole ``Pipeline.__call__`` (registration + fusion).

Also DIFN ``cpu`` alone, evaluated with channel concatenations (the path before session 5) and with
per-piece convolution sums (``alignfuse.models.difn.conv_of_concat``, the inference path now), same run.

``mrrn+difn[...]``: the shipped registration (no CPSTN; MIND global stage, MRRN with MIND inputs run from
the global and the identity start) with DIFN ``cpu`` (nfeats 16), ``fast`` (nfeats 8) or ``paper`` (64);
``[ecc,fast]`` uses the gradient-ECC global stage instead; ``[no global,...]`` is the MRRN alone, as in the
``umf-nocpstn+difn`` pipeline.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from alignfuse.model_pipelines import REGISTER_LONG_SIDE, NetFuser
from alignfuse.pipeline import Pipeline
from alignfuse.registry import create_pipeline

H, W = 480, 640
SAMPLE = Path(__file__).resolve().parents[1] / "samples"


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    from alignfuse import io

    pair = io.load_pair(SAMPLE / "ir" / "FLIR_00211.jpg", SAMPLE / "vi" / "FLIR_00211.jpg")
    ir = torch.from_numpy(pair.ir)[None, None]
    vis = torch.from_numpy(pair.vis).permute(2, 0, 1)[None]
    resize = lambda t: torch.nn.functional.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)  # noqa: E731
    return resize(ir).clamp(0, 1), resize(vis).clamp(0, 1)


def _umf(config: str, mrrn: str | None = None, difn: str | None = None, label: str | None = None) -> Pipeline:
    """UMF-CMGR with CPSTN config ``config`` and MRRN/DIFN configs (default: the same name)."""
    from alignfuse.models.cpstn import CPSTNTranslator
    from alignfuse.models.difn import build_difn
    from alignfuse.models.mrrn import build_mrrn
    from alignfuse.registration import DeformableRegistrar

    torch.manual_seed(0)
    cl = torch.channels_last  # as model_pipelines.load_cpstn / load_mrrn leave the shipped nets
    return Pipeline(CPSTNTranslator(config=config).eval().to(memory_format=cl),
                    DeformableRegistrar(build_mrrn(mrrn or config).eval().to(memory_format=cl),
                                        global_reference="visible"),  # as the umf-cmgr pipeline
                    NetFuser(build_difn(difn or config)), register_long_side=REGISTER_LONG_SIDE,
                    name=f"umf-cmgr[{label or config}]")


def _mrrn(mrrn: str, difn: str, global_stage: str | None = "mind", label: str | None = None) -> Pipeline:
    """``mrrn+difn``: no translator, global stage + MRRN from both starts (global_margin 0) + DIFN."""
    from alignfuse.model_pipelines import GLOBAL_MARGIN
    from alignfuse.models.difn import build_difn
    from alignfuse.models.mrrn import build_mrrn
    from alignfuse.registration import DeformableRegistrar

    torch.manual_seed(0)
    registrar = DeformableRegistrar(build_mrrn(mrrn, inputs="mind").eval().to(memory_format=torch.channels_last),
                                    global_stage=global_stage,
                                    criterion="mind", global_margin=GLOBAL_MARGIN if global_stage else None)
    return Pipeline(registrar=registrar, fuser=NetFuser(build_difn(difn)), register_long_side=REGISTER_LONG_SIDE,
                    name=f"mrrn+difn[{label or difn}]")


def _rfvif(config: str) -> Pipeline:
    from alignfuse.models.rfvif import RFVIF

    torch.manual_seed(0)
    return Pipeline(fuser=NetFuser(RFVIF(config), output="fused"), name=f"rfvif[{config}]")


def _difn_concat_vs_sum(ir: torch.Tensor, vis: torch.Tensor, repeat: int) -> dict[str, float]:
    """DIFN ``cpu`` alone on the 640x480 luminance pair, both ways of evaluating a conv of a concatenation.

    ``conv_of_concat`` concatenates whenever autograd is on; with every tensor detached no graph is
    recorded, so the ``concat`` timing is the pre-session-5 inference path at no autograd cost."""
    from alignfuse.models.difn import build_difn
    from alignfuse.stages import luminance

    torch.manual_seed(0)
    net = NetFuser(build_difn("cpu")).net.requires_grad_(False)  # channels-last, eval, as shipped
    y = luminance(vis)
    with torch.no_grad():
        summed = _time(lambda: net(ir, y), repeat)
    with torch.enable_grad():
        concat = _time(lambda: net(ir, y), repeat)
    return {"difn_cpu_concat_s": concat, "difn_cpu_sum_s": summed}


def _time(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument("--skip-paper", action="store_true", help="only the CPU configurations")
    parser.add_argument("--only", action="append", help="time only the pipelines whose name contains this (repeat)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ir, vis = _pair()
    rows = []
    # `fast`: speed configurations (DIFN nfeats 8; RFVIF without full-resolution MSRBs); `fast-skip` is
    # `fast` + the full-resolution visible skip (the RFVIF configuration shipped since session 3)
    pipes = [create_pipeline("ecc+gff"), create_pipeline("identity+average"), create_pipeline("mind+gff"),
             _umf("cpu", mrrn="cpu-mind"), _umf("cpu", mrrn="cpu-mind", difn="fast", label="fast"), _mrrn("cpu-mind", "cpu"),
             _mrrn("cpu-mind", "fast", label="fast"), _mrrn("cpu-mind", "fast", "ecc", label="ecc,fast"),
             _mrrn("cpu-mind", "cpu", None, label="no global,cpu"), _mrrn("cpu-mind", "fast", None, label="no global,fast"),
             _rfvif("cpu"), _rfvif("fast"), _rfvif("fast-skip"), _rfvif("fast-irskip"), _rfvif("fast-shift"),
             _rfvif("fast-shift-pyr")]
    if not args.skip_paper:
        pipes += [_umf("paper"), _mrrn("paper", "paper"), _rfvif("paper")]
    if args.only:
        pipes = [p for p in pipes if any(key in p.name for key in args.only)]
    for pipe in pipes:
        with torch.no_grad():
            reg = _time(lambda: pipe.register(ir, vis), args.repeat)
            full = _time(lambda: pipe(ir, vis), args.repeat)
        rows.append({"pipeline": pipe.name, "register_s": reg, "pipeline_s": full})
        print(f"{pipe.name:<24} register {reg:7.3f} s   pipeline {full:7.3f} s", flush=True)
    difn = _difn_concat_vs_sum(ir, vis, args.repeat)
    print(f"DIFN cpu alone: concatenating {difn['difn_cpu_concat_s']:.3f} s, per-piece sums "
          f"{difn['difn_cpu_sum_s']:.3f} s (x{difn['difn_cpu_concat_s'] / difn['difn_cpu_sum_s']:.2f})")
    by = {r["pipeline"]: r for r in rows}
    for a, b in (("umf-cmgr[paper]", "umf-cmgr[cpu]"), ("umf-cmgr[paper]", "umf-cmgr[fast]"),
                 ("mrrn+difn[paper]", "mrrn+difn[cpu]"), ("mrrn+difn[paper]", "mrrn+difn[fast]"),
                 ("mrrn+difn[paper]", "mrrn+difn[no global,cpu]"),
                 ("rfvif[paper]", "rfvif[cpu]"), ("rfvif[paper]", "rfvif[fast]"),
                 ("rfvif[paper]", "rfvif[fast-skip]"), ("rfvif[fast-skip]", "rfvif[fast-irskip]"),
                 ("rfvif[fast-skip]", "rfvif[fast-shift]"), ("rfvif[fast-shift]", "rfvif[fast-shift-pyr]")):
        if a in by and b in by:
            reg = (f"register x{by[a]['register_s'] / by[b]['register_s']:.1f}, "
                   if by[b]["register_s"] > 1e-2 else "")  # RFVIF has no registration step: no ratio
            print(f"speed-up {b} vs {a}: {reg}pipeline x{by[a]['pipeline_s'] / by[b]['pipeline_s']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"size": [H, W], "threads": args.threads, "rows": rows, **difn,
                                               "machine": platform.platform(), "torch": torch.__version__}, indent=1))


if __name__ == "__main__":
    main()
