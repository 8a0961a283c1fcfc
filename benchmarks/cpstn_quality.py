"""Pseudo-IR quality of a CPSTN against the real IR (the issue-18 measures), RoadScene test pairs.

    python benchmarks/cpstn_quality.py [--weights W.safetensors ...] [--limit N] [--threads 1]

Per pair of ``--split`` (default the test names; the visible image translated at its own size, padded to a
multiple of 4): global Pearson correlation with the real IR, SSIM (``losses.fusion.ssim``, [0, 1] images), an edge measure (Pearson correlation of the Sobel
magnitudes) and a checkerboard measure: the share of spectral power within 2 % (of the frequency range) of the
period-2 frequencies (0.5 cycles/px in x and/or y, where a stride-2 transposed convolution draws its pattern),
divided by the same share in the real IR (1.0 = no more period-2 energy than the real IR has). Without
``--weights`` the shipped CPSTN is scored; each ``--weights`` file is an export (``export.safetensors``) or a
training checkpoint (``checkpoint.pt``, its G_A). The last column times one 640x480 translation.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from kornia.filters import spatial_gradient

from alignfuse import checkpoints, io
from alignfuse.losses.fusion import ssim
from alignfuse.models.cpstn import CPSTN_CONFIGS, CPSTNTranslator, ResnetGenerator
from alignfuse.training.recipes import cpstn_generator_state


def load_translator(path: Path | None) -> tuple[str, CPSTNTranslator]:
    if path is None:
        from alignfuse.model_pipelines import load_cpstn

        return "shipped cpstn_cpu", load_cpstn(None)
    if path.suffix == ".pt":
        import json

        net_name = json.loads((path.parent / "config.json").read_text())["run"]["net"]  # the run's recipe
        g = ResnetGenerator.from_config(CPSTN_CONFIGS[net_name], 3, 1)
        g.load_state_dict(cpstn_generator_state(path))
        step = torch.load(path, map_location="cpu", weights_only=False)["step"]
        return f"{path.parent.name} step {step}", CPSTNTranslator(g).eval()
    state, meta = checkpoints.load_weights(path, architecture="cpstn_g_a")
    g = ResnetGenerator.from_config(meta["config"], meta["config"]["in_ch"], meta["config"]["out_ch"])
    g.load_state_dict(state)
    return f"{path.parent.name}/{path.name}", CPSTNTranslator(g).eval()


def period2_share(img: np.ndarray, band: float = 0.02) -> float:
    f = np.abs(np.fft.fftshift(np.fft.fft2(img - img.mean()))) ** 2
    fy = np.abs(np.fft.fftshift(np.fft.fftfreq(img.shape[0])))[:, None]
    fx = np.abs(np.fft.fftshift(np.fft.fftfreq(img.shape[1])))[None, :]
    near = (fy >= 0.5 - band) | (fx >= 0.5 - band)
    return float(f[near].sum() / max(f.sum(), 1e-12))


def _sobel(x: torch.Tensor) -> torch.Tensor:
    return spatial_gradient(x, mode="sobel").pow(2).sum(2).sqrt()


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _seconds_640(translator, repeat: int = 3) -> str:
    """Median wall time of one 640x480 RGB translation (after a warm-up call), at this run's torch threads."""
    if translator is None:
        return "-"
    x = torch.rand(1, 3, 480, 640)
    times = []
    with torch.no_grad():
        translator(x)
        for _ in range(repeat):
            t0 = time.perf_counter()
            translator(x)
            times.append(time.perf_counter() - t0)
    return f"{float(np.median(times)):.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/roadscene"))
    parser.add_argument("--weights", type=Path, action="append", default=[])
    parser.add_argument("--limit", type=int)
    parser.add_argument("--split", default="test.txt",
                        help="names file inside --data (test.txt; train.txt shows the fit on the training pairs)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--export-to", type=Path,
                        help="also write the last --weights' G_A as DIR/cpstn_cpu.safetensors + .json (a --weights-dir "
                             "for `alignfuse evaluate`), e.g. from a training checkpoint")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.export_to and args.weights:
        label, tr = load_translator(args.weights[-1])
        checkpoints.save_weights(tr.generator, args.export_to / "cpstn_cpu", "cpstn_g_a", dict(tr.generator.config),
                                 training={"source": label})
    names = io.read_split(args.data / args.split)[: args.limit]
    pairs, _ = io.pair_folders(args.data / "ir", args.data / "vi", names=names)
    loaded = [io.load_pair(i, v) for _, i, v in pairs]
    print(f"# CPSTN pseudo-IR vs real IR, {len(loaded)} RoadScene pairs of {args.split}; {date.today()}; "
          f"{platform.processor() or platform.machine()}; torch {torch.__version__}")
    print("# command: python benchmarks/cpstn_quality.py " + " ".join(sys.argv[1:] if argv is None else argv) + "\n")
    print("| translator | Pearson | SSIM | edge Pearson | period-2 energy vs real IR | s per 640x480 image |")
    print("|---|---|---|---|---|---|")
    rows = [("visible luminance (no translation)", None)] + [load_translator(None)] + [load_translator(w) for w in args.weights]
    for label, tr in rows:
        stats = []
        for pair in loaded:
            vis = pair.vis if pair.vis.ndim == 3 else np.repeat(pair.vis[..., None], 3, 2)
            if tr is None:
                pseudo = pair.vis_y
            else:
                with torch.no_grad():
                    t = torch.from_numpy(np.ascontiguousarray(vis.transpose(2, 0, 1)))[None].float()
                    pseudo = tr(t)[0, 0].numpy()
            ir = pair.ir
            pt, it = torch.from_numpy(pseudo)[None, None].float(), torch.from_numpy(ir)[None, None].float()
            stats.append((_pearson(pseudo, ir), float(ssim(pt, it)), _pearson(_sobel(pt).numpy(), _sobel(it).numpy()),
                          period2_share(pseudo) / max(period2_share(ir), 1e-12)))
        m = np.mean(stats, axis=0)
        print(f"| {label} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.2f} | {_seconds_640(tr)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
