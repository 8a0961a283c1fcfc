"""Synthetic fixed rig: calibrate recovers the rig; `fuse --rig` against the per-frame default (accuracy, time, jitter).

    python benchmarks/fixed_rig.py [--data ../shared/data/roadscene] [--frames 24] [--jitter 0.3] [--threads 2]

Frames: the first ``--frames`` RoadScene *test* pairs, resized to 640x480 (visible) and re-delivered through one
IR camera (``synth_rig.example_rig``: 640x512 sensor, wider field of view, 2.5 deg roll, offset, mild perspective)
with a random translation of ``--jitter`` raw px per frame (a nearly fixed rig), written as 8-bit PNGs and
calibrated through the CLI. Reported: the calibrated model's error at the frame corners (visible px), EPE of
every frame's field against its ground truth for the per-frame default and for ``--rig`` (with and without the
local stage), seconds per frame (registration only, same run, same thread count), and jitter: the mean change
of the field between consecutive frames of a static scene (one pair, the exact rig, fresh sensor noise of
1/255 per frame).
"""

from __future__ import annotations

import argparse
import contextlib
import io as _stdio
import platform
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np
import torch

from alignfuse import cli, io
from alignfuse.api import load_pipeline, register_arrays
from alignfuse.registration.rig import RigModel, _ir_to_grid, corner_error
from alignfuse.synth_rig import deliver_ir, example_rig, jittered, true_field

VIS_SIZE, IR_SIZE = (640, 480), (640, 512)


def _true_rig(kind: str) -> np.ndarray:
    """``example``: synth_rig.example_rig; ``resize``: the IR sensor sees exactly the visible field of view (the
    rig is the pure resampling between the two sizes), which measures the bias of the estimate itself against
    the dataset's hand alignment."""
    if kind == "resize":
        return np.linalg.inv(_ir_to_grid(VIS_SIZE, IR_SIZE))
    return example_rig(VIS_SIZE, IR_SIZE)


def _frames(data: Path, n: int, jitter: float, seed: int, kind: str):
    names = io.read_split(data / "test.txt")[:n]
    rng = np.random.default_rng(seed)
    rig = _true_rig(kind)
    pairs, _ = io.pair_folders(data / "ir", data / "vi", names=names)
    for stem, ir_path, vis_path in pairs:
        pair = io.load_pair(ir_path, vis_path)
        vis = cv2.resize(pair.vis, VIS_SIZE, interpolation=cv2.INTER_AREA)
        ir_gt = cv2.resize(pair.ir, VIS_SIZE, interpolation=cv2.INTER_AREA)
        h = jittered(rig, jitter, rng)
        yield stem, vis, deliver_ir(ir_gt, h, IR_SIZE), h, ir_gt


def _epe(field: np.ndarray, truth: np.ndarray, margin: int = 8) -> float:
    d = np.sqrt(((field - truth) ** 2).sum(0))[margin:-margin, margin:-margin]
    return float(d.mean())


def _register_all(pipe, frames) -> tuple[list[float], float]:
    epes, seconds = [], 0.0
    for _, vis, ir_raw, h, _ in frames:
        t0 = time.perf_counter()
        result = register_arrays(ir_raw, vis, pipe, ir_size=IR_SIZE, warn=False)
        seconds += time.perf_counter() - t0
        epes.append(_epe(result.field, true_field(h, VIS_SIZE, IR_SIZE)))
    return epes, seconds / len(frames)


def _jitter(pipe, vis: np.ndarray, ir_raw: np.ndarray, n: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    fields = []
    for _ in range(n):
        noisy_vis = np.clip(vis + rng.normal(0, 1 / 255, vis.shape), 0, 1).astype(np.float32)
        noisy_ir = np.clip(ir_raw + rng.normal(0, 1 / 255, ir_raw.shape), 0, 1).astype(np.float32)
        fields.append(register_arrays(noisy_ir, noisy_vis, pipe, ir_size=IR_SIZE, warn=False).field)
    steps = [np.sqrt(((a - b) ** 2).sum(0)).mean() for a, b in zip(fields[1:], fields[:-1])]
    return float(np.mean(steps))


def _calibrate(frames: list) -> tuple[RigModel, float, list] | None:
    """Write the frames as 8-bit PNGs, run `alignfuse calibrate` on them -> (rig, seconds, the frames as re-read from
    the PNGs: the round trip a user's frames go through), or None when calibrate failed (its output printed)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "ir").mkdir()
        (root / "vi").mkdir()
        for stem, vis, ir_raw, _, _ in frames:
            io.write_image(root / "vi" / f"{stem}.png", vis)
            io.write_image(root / "ir" / f"{stem}.png", ir_raw)
        t0 = time.perf_counter()
        out = _stdio.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(_stdio.StringIO()):
            rc = cli.main(["calibrate", "--ir-dir", str(root / "ir"), "--vis-dir", str(root / "vi"),
                           "-o", str(root / "rig.json")])
        seconds = time.perf_counter() - t0
        if rc != 0:
            print(out.getvalue())
            return None
        rig = RigModel.load(root / "rig.json")
        frames = [(stem, io.read_image(root / "vi" / f"{stem}.png", kind="vis").data,
                   io.read_image(root / "ir" / f"{stem}.png", kind="ir").data, h, gt) for stem, _, _, h, gt in frames]
    return rig, seconds, frames


def _bias_check(args) -> int:
    """Calibrate the example rig and the do-nothing (resize) rig on the same frames: the resize rig's estimate is the
    estimator's own bias against the dataset's hand alignment (in visible coordinates), so example @ inv(resize)
    is the example estimate with that bias removed."""
    runs = {}
    for kind in ("example", "resize"):
        got = _calibrate(list(_frames(args.data, args.frames, args.jitter, args.seed, kind)))
        if got is None:
            return 1
        runs[kind] = got[0].grid_matrix()
    truth = _ir_to_grid(VIS_SIZE, IR_SIZE) @ _true_rig("example")
    raw = corner_error(runs["example"], truth, VIS_SIZE)
    corrected = corner_error(runs["example"] @ np.linalg.inv(runs["resize"]), truth, VIS_SIZE)
    bias = corner_error(runs["resize"], np.eye(3), VIS_SIZE)
    print(f"# bias check, {args.frames} RoadScene test frames, jitter {args.jitter}; {date.today()}; "
          f"command: python benchmarks/fixed_rig.py --bias-check --frames {args.frames} --threads {args.threads}")
    print(f"corner error of the calibrated example rig: {raw:.2f} px; of the do-nothing rig: {bias:.2f} px; "
          f"example with the do-nothing rig's estimate removed: {corrected:.2f} px")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/roadscene"))
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--jitter", type=float, default=0.3, help="per-frame rig jitter, raw IR px (std per axis)")
    parser.add_argument("--static-frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rig", choices=["example", "resize"], default="example",
                        help="the simulated rig (example: offset, roll, wider IR field, perspective; resize: none)")
    parser.add_argument("--calibrate-only", action="store_true", help="stop after the calibration")
    parser.add_argument("--bias-check", action="store_true",
                        help="calibrate the example and the do-nothing rig on the same frames; report both and the "
                             "example's error with the do-nothing estimate removed")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.bias_check:
        return _bias_check(args)
    frames = list(_frames(args.data, args.frames, args.jitter, args.seed, args.rig))
    rig_true = _true_rig(args.rig)
    calibrated = _calibrate(frames)
    if calibrated is None:
        return 1
    rig, calib_s, frames = calibrated
    vis_grid = lambda m: _ir_to_grid(VIS_SIZE, IR_SIZE) @ m  # noqa: E731
    err_true = corner_error(rig.grid_matrix(), vis_grid(rig_true), VIS_SIZE)
    mean_h = np.mean([vis_grid(f[3]) for f in frames], axis=0)
    err_mean = corner_error(rig.grid_matrix(), mean_h, VIS_SIZE)

    if args.calibrate_only:
        print(f"rig {args.rig}: {rig.model}, verdict {rig.verdict}, {rig.frames}, spread {rig.spread_px}; "
              f"corner error {err_true:.2f} px vs the true rig, {err_mean:.2f} px vs the frames' mean; "
              f"{calib_s / len(frames):.2f} s/frame")
        return 0
    rows = []
    pipes = {"default (per-frame global search + local)": load_pipeline("default"),
             "default --rig": load_pipeline("default", rig=rig),
             "default --rig --no-local": load_pipeline("default", rig=rig, local=False)}
    static_vis, static_ir = frames[0][1], deliver_ir(frames[0][4], rig_true, IR_SIZE)
    for label, pipe in pipes.items():
        epes, sec = _register_all(pipe, frames)
        jit = _jitter(pipe, static_vis, static_ir, args.static_frames, args.seed)
        rows.append((label, float(np.mean(epes)), float(np.median(epes)), float(np.max(epes)), sec, jit))

    cpu = platform.processor() or platform.machine()
    print(f"# fixed rig, {len(frames)} RoadScene test frames at {VIS_SIZE[0]}x{VIS_SIZE[1]} / IR {IR_SIZE[0]}x{IR_SIZE[1]}, "
          f"jitter {args.jitter} px; {date.today()}, {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"# command: python benchmarks/fixed_rig.py --frames {args.frames} --jitter {args.jitter} --threads {args.threads}"
          f" --rig {args.rig}\n")
    print(f"calibrate: {rig.model}, verdict {rig.verdict}, {rig.frames.get('agreed')}/{rig.frames.get('frames')} frames "
          f"agree, spread RMS {rig.spread_px.get('corner_rms', float('nan')):.2f} px; {calib_s:.1f} s "
          f"({calib_s / len(frames):.2f} s/frame)")
    print(f"corner error of the calibrated rig: {err_true:.2f} px vs the rig without jitter, {err_mean:.2f} px vs the "
          "mean of the frames' jittered models\n")
    print("| registration | EPE mean (px) | median | worst | s/frame | jitter (px, static scene) |")
    print("|---|---|---|---|---|---|")
    for label, mean, med, worst, sec, jit in rows:
        print(f"| {label} | {mean:.2f} | {med:.2f} | {worst:.2f} | {sec:.3f} | {jit:.3f} |")
    base = rows[0][4]
    for label, *_, sec, _ in rows[1:]:
        print(f"\n{label}: {sec / base:.3f} x the per-frame default's time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
