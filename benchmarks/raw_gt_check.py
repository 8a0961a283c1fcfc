"""Where a registration and the ``roadscene_raw`` ground truth disagree, which one aligns the images?

    python benchmarks/raw_gt_check.py --split train [--model global+average] [--min-tre 5] [--json out.json]

The ground truth of ``roadscene_raw`` is RoadScene's own hand alignment (its README: a homography fitted between
RoadScene's aligned IR and the raw frame, exact to 0.23 px *for that alignment*). Where the hand alignment itself is
off, the TRE measures the hand alignment's error, not the registration's. This script asks two measures that the
registration does not optimise (``aligned_check.py``: intensity mutual information and the correlation of Sobel
gradient magnitudes, IR against the visible luminance, 24 px border left out) which of the two IR images lies
better on the visible one: the raw IR read by the ground truth or read by the pipeline.

Per pair: both scores for both readings. The registration maximises a related similarity, so the two measures
favour its reading slightly even where it and the ground truth agree; the pairs within ``--min-tre`` raw px give
that baseline. A pair above ``--min-tre`` then gets a verdict from the margins ours - GT of both measures, ranked
against the same margins on the agreeing pairs:

* ``ground truth disputed``: both margins above the agreeing pairs' 90th percentile;
* ``registration wrong``: both margins below their 10th percentile;
* ``undecided``: otherwise (the measures cannot tell the two readings apart better than on agreeing pairs).

Also per pair, the ground truth's perspective strength (|(h20, h21)| of H in coordinates normalised to the visible
frame's half long side), since the disagreements concentrate on the pairs whose hand alignment holds the most
perspective. Neither measure is proof (a text overlay or a large uniform region can fool both): the verdicts are
evidence for reading the TRE table, not a replacement for it; ``--figure`` shows the worst pairs for the eye.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from alignfuse import io, load_pipeline
from alignfuse import warp as warp_ops
from alignfuse.api import register_arrays
from alignfuse.metrics import target_registration_error
from alignfuse.stages import luminance

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aligned_check import BORDER, figure, gradient_ncc, mutual_information  # noqa: E402

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"
MEASURES = ("mi", "gradient_ncc")


def ground_truth_field(h_vis_to_raw: np.ndarray, vis_size: tuple[int, int], ir_size: tuple[int, int]) -> np.ndarray:
    """The dataset's homography (raw IR ~ H @ visible) -> (2, H, W) field on the visible grid, in pixels of the IR
    resampled onto that grid (the public field convention, :func:`alignfuse.io.field_to_ir_coordinates`)."""
    h, w = vis_size
    iw, ih = ir_size
    resized_to_raw = np.array([[iw / w, 0, 0.5 * iw / w - 0.5], [0, ih / h, 0.5 * ih / h - 0.5], [0, 0, 1]])
    sampling = np.linalg.inv(resized_to_raw) @ h_vis_to_raw
    return warp_ops.field_from_matrix(torch.from_numpy(sampling[None]), h, w)[0].numpy()


def perspective_strength(h_vis_to_raw: np.ndarray, vis_size: tuple[int, int]) -> float:
    """|(h20, h21)| of H with the visible coordinates centred and divided by the frame's half long side (0 for an
    affine map; 0.1: the scale changes by ~10 % from the centre to the frame's edge)."""
    h, w = vis_size
    s = max(h, w) / 2.0
    to_norm = np.array([[1 / s, 0, -(w - 1) / 2 / s], [0, 1 / s, -(h - 1) / 2 / s], [0, 0, 1]])
    hn = h_vis_to_raw @ np.linalg.inv(to_norm)
    hn = hn / hn[2, 2]
    return float(np.hypot(hn[2, 0], hn[2, 1]))


def read(ir: np.ndarray, field: np.ndarray) -> np.ndarray:
    """IR on the visible grid (H, W), field (2, H, W) -> the IR read by the field (H, W)."""
    t = torch.from_numpy(np.ascontiguousarray(ir, dtype=np.float32))[None, None]
    return warp_ops.warp(t, torch.from_numpy(np.ascontiguousarray(field, dtype=np.float32))[None])[0, 0].numpy()


def scores(read: np.ndarray, vis_y: np.ndarray) -> dict[str, float]:
    """A read IR and the visible luminance (H, W) -> MI and gradient NCC, the border left out."""
    b = BORDER
    a, v = np.clip(read[b:-b, b:-b], 0, 1), np.clip(vis_y[b:-b, b:-b], 0, 1)
    return {"mi": mutual_information(a, v), "gradient_ncc": gradient_ncc(a, v)}


def margins(row: dict) -> np.ndarray:
    """(2,): ours - ground truth for each of :data:`MEASURES`."""
    return np.array([row["ours"][m] - row["ground_truth"][m] for m in MEASURES])


def verdict(margin: np.ndarray, baseline: np.ndarray) -> str:
    """A disagreeing pair's margins (2,) against the agreeing pairs' (n, 2) -> verdict (module docstring)."""
    if (margin > np.percentile(baseline, 90, axis=0)).all():
        return "ground truth disputed"
    if (margin < np.percentile(baseline, 10, axis=0)).all():
        return "registration wrong"
    return "undecided"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT, help="folder holding roadscene/ and roadscene_raw/")
    ap.add_argument("--split", default="train", help="test | train | a names file")
    ap.add_argument("--model", default="global+average")
    ap.add_argument("--min-tre", type=float, default=5.0, help="judge the pairs above this TRE (raw IR px)")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--figure", type=Path, help="IR edges on the visible image, ground truth | ours, for up to three "
                    "judged pairs, disputed ones first, then registration failures, each by TRE (zoomed crops where "
                    "the two disagree most)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    raw = args.data / "roadscene_raw"
    split = args.data / "roadscene" / f"{args.split}.txt" if args.split in ("test", "train") else Path(args.split)
    names = [n.rsplit(".", 1)[0] for n in io.read_split(split)][: args.limit]
    pipe = load_pipeline(args.model)
    rows, reads = [], {}
    for name in names:
        pair = io.load_pair(raw / "ir_raw" / f"{name}.png", args.data / "roadscene" / "vi" / f"{name}.jpg")
        points = np.loadtxt(raw / "points" / f"{name}.csv", delimiter=",", skiprows=1, ndmin=2)
        h_gt = np.loadtxt(raw / "homography" / f"{name}.txt")
        result = register_arrays(pair.ir, pair.vis, pipe, ir_size=pair.ir_size, warn=False)
        vis_y = luminance(io.to_tensor(pair.vis))[0, 0].numpy()
        size = vis_y.shape
        field_gt, field_ours = ground_truth_field(h_gt, size, pair.ir_size), np.asarray(result.field)
        by_gt, by_ours = read(pair.ir, field_gt), read(pair.ir, field_ours)
        row = {"name": name, "tre_raw_px": target_registration_error(result.ir_coordinates(), points),
               "perspective": perspective_strength(h_gt, size),
               "ground_truth": scores(by_gt, vis_y), "ours": scores(by_ours, vis_y)}
        row["verdict"] = "agree" if row["tre_raw_px"] <= args.min_tre else None
        if row["verdict"] is None and args.figure:
            reads[name] = (by_gt, by_ours, vis_y, np.linalg.norm(field_gt - field_ours, axis=0))
        rows.append(row)
        print(f"{name} TRE {row['tre_raw_px']:6.2f} persp {row['perspective']:.3f} | MI gt {row['ground_truth']['mi']:.4f}"
              f" ours {row['ours']['mi']:.4f} | gNCC gt {row['ground_truth']['gradient_ncc']:.4f} ours "
              f"{row['ours']['gradient_ncc']:.4f}", file=sys.stderr, flush=True)

    agree = [r for r in rows if r["verdict"] == "agree"]
    judged = [r for r in rows if r["verdict"] is None]
    if judged and len(agree) < 20:
        print(f"only {len(agree)} pairs within {args.min_tre:g} px: too few for a baseline, no verdicts "
              "(run on more pairs, e.g. --split train)", file=sys.stderr)
    baseline = np.array([margins(r) for r in agree]).reshape(-1, len(MEASURES))
    for r in judged:
        r["verdict"] = verdict(margins(r), baseline) if len(agree) >= 20 else "undecided"
    print(f"\n`{args.model}` on {len(rows)} `{args.split}` pairs: {len(judged)} with TRE > {args.min_tre:g} raw px\n")
    print("| pair | TRE (raw px) | GT perspective | MI: GT / ours | gradient NCC: GT / ours | verdict |")
    print("|---|--:|--:|---|---|---|")
    for r in sorted(judged, key=lambda r: -r["tre_raw_px"]):
        g, o = r["ground_truth"], r["ours"]
        print(f"| {r['name']} | {r['tre_raw_px']:.2f} | {r['perspective']:.3f} | {g['mi']:.4f} / {o['mi']:.4f} | "
              f"{g['gradient_ncc']:.4f} / {o['gradient_ncc']:.4f} | {r['verdict']} |")
    counts = {v: sum(r["verdict"] == v for r in judged) for v in
              ("ground truth disputed", "registration wrong", "undecided")}
    print("\n" + ", ".join(f"{v}: {n}" for v, n in counts.items()))
    for i, m in enumerate(MEASURES if agree else ()):  # the baseline: the measures' margins where both agree
        print(f"pairs within {args.min_tre:g} px ({len(agree)}): {m} ours - GT mean {baseline[:, i].mean():+.4f}, "
              f"10th / 90th percentile {np.percentile(baseline[:, i], 10):+.4f} / "
              f"{np.percentile(baseline[:, i], 90):+.4f}, ours higher on {(baseline[:, i] > 0).sum()}")
    persp = np.array([r["perspective"] for r in rows])
    tre = np.array([r["tre_raw_px"] for r in rows])
    for lo, hi in ((0.0, 0.02), (0.02, 0.04), (0.04, 0.07), (0.07, np.inf)):
        sel = (persp >= lo) & (persp < hi)
        if sel.any():
            print(f"GT perspective {lo:g}-{hi:g}: {sel.sum()} pairs, mean TRE {tre[sel].mean():.2f} raw px, "
                  f"{(tre[sel] <= args.min_tre).sum()} within {args.min_tre:g}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.figure and judged:
        rank = {"ground truth disputed": 0, "registration wrong": 1, "undecided": 2}
        worst = sorted(judged, key=lambda r: (rank[r["verdict"]], -r["tre_raw_px"]))[:3]
        figure([(r["name"], *reads[r["name"]]) for r in worst], args.figure)
        print(f"figure: {args.figure} (ground truth | ours: {', '.join(r['name'] for r in worst)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
