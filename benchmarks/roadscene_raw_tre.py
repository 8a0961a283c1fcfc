"""Target registration error on real rig pairs: RoadScene's raw thermal frames against their visible crops.

For each pair of ``roadscene_raw`` (``ir_raw/NAME.png`` vs ``roadscene/vi/NAME.jpg``), the pipeline registers the
raw IR as a user's call would (the IR resampled onto the visible grid, its size as delivered passed along), and
the field is mapped back to raw IR pixels (``io.field_to_ir_coordinates``). TRE = mean distance over the pair's
check points (``points/NAME.csv``) between that prediction and the ground truth, in raw IR pixels (and in visible
pixels, dividing by the pair's mean raw-per-visible scale).

    python benchmarks/roadscene_raw_tre.py --split test --model default --model identity+average [--json out.json]

``--set KEY=VALUE`` (repeatable) overrides an attribute of every pipeline's global search
(:class:`~alignfuse.registration.GlobalSearchRegistrar`; its value read as a Python literal), for variants of the
search measured on training names, e.g. ``--split train --set passes=3 --set "sizes=(128, 256, 512)"``.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from alignfuse import io, load_pipeline
from alignfuse.api import register_arrays
from alignfuse.metrics import check_point_errors, target_registration_error
from alignfuse.registration import GlobalSearchRegistrar

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data"


def tre(result, points: np.ndarray) -> float:
    """Mean check-point error in raw IR pixels of a registration result."""
    return target_registration_error(result.ir_coordinates(), points)


def score(pipe, model: str, names: list[str], data: Path) -> dict:
    """TRE of ``pipe`` (labelled ``model``) on the ``roadscene_raw`` pairs ``names`` -> per-pair rows and summary."""
    raw = data / "roadscene_raw"
    rows = []
    for name in names:
        pair = io.load_pair(raw / "ir_raw" / f"{name}.png", data / "roadscene" / "vi" / f"{name}.jpg")
        points = np.loadtxt(raw / "points" / f"{name}.csv", delimiter=",", skiprows=1, ndmin=2)
        t0 = time.perf_counter()
        result = register_arrays(pair.ir, pair.vis, pipe, ir_size=pair.ir_size, warn=False)
        dt = time.perf_counter() - t0
        h_mat = np.loadtxt(raw / "homography" / f"{name}.txt")
        px_per_vis = float(np.sqrt(abs(np.linalg.det(h_mat[:2, :2]))))  # raw IR px per visible px
        ident = target_registration_error(io.field_to_ir_coordinates(np.zeros_like(result.field), pair.ir_size),
                                          points)
        offset = check_point_errors(result.ir_coordinates(), points).mean(0)  # the pair's mean error vector
        rows.append({"name": name, "tre_raw_px": tre(result, points), "identity_raw_px": ident,
                     "offset_raw_px": [float(offset[0]), float(offset[1])],
                     "raw_per_vis": px_per_vis, "seconds": dt,
                     "model": result.diagnostics.get("model"), "confidence": result.diagnostics.get("confidence"),
                     "suspect": bool(result.diagnostics.get("suspect")),
                     "stages": {st["name"]: (bool(st["accepted"]), round(float(st["gain"]), 4))
                                for st in result.diagnostics.get("stages", [])}})
        print(f"{model:>20s} {name} {rows[-1]['identity_raw_px']:7.2f} -> {rows[-1]['tre_raw_px']:7.2f} raw px "
              f"({dt:.2f} s) {rows[-1]['stages']}", file=sys.stderr, flush=True)
    t = np.array([r["tre_raw_px"] for r in rows])
    i = np.array([r["identity_raw_px"] for r in rows])
    s = np.array([r["raw_per_vis"] for r in rows])
    # a common offset of the pairs within 5 px would be a convention error (ours or the ground truth's); a spread
    # around zero is each pair's own disagreement with RoadScene's hand alignment
    good = np.array([r["offset_raw_px"] for r in rows if r["tre_raw_px"] <= 5]).reshape(-1, 2)
    return {"offset_mean_raw_px": good.mean(0).tolist() if len(good) else None,
            "offset_std_raw_px": good.std(0).tolist() if len(good) else None,"pairs": rows, "mean_raw_px": float(t.mean()), "median_raw_px": float(np.median(t)),
            "max_raw_px": float(t.max()), "mean_vis_px": float((t / s).mean()),
            "within_5px": int((t <= 5).sum()), "worse_than_identity": int((t > i).sum()),
            "identity_mean_raw_px": float(i.mean()), "seconds_per_pair": float(np.mean([r["seconds"] for r in rows]))}


def global_searches(registrar) -> list:
    """Every GlobalSearchRegistrar inside a pipeline's registrar (itself, or the stages of a chain)."""
    if isinstance(registrar, GlobalSearchRegistrar):
        return [registrar]
    return [s.registrar for s in getattr(registrar, "stages", []) if isinstance(s.registrar, GlobalSearchRegistrar)]


def apply_overrides(pipe, overrides: list[str]) -> None:
    """``KEY=VALUE`` attribute overrides on the pipeline's global search, or, for a pipeline without one, on its
    registrar itself (e.g. ``transforms=('affine', 'bspline')`` for elastix); an unknown key is an error."""
    targets = global_searches(pipe.registrar) or [pipe.registrar]
    for item in overrides:
        key, _, value = item.partition("=")
        for g in targets:
            if not hasattr(g, key):
                raise SystemExit(f"--set: {type(g).__name__} has no attribute {key!r}")
            setattr(g, key, ast.literal_eval(value))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT), help="folder holding roadscene/ and roadscene_raw/")
    ap.add_argument("--split", default="test", help="test | train | a names file")
    ap.add_argument("--model", action="append", help="pipeline names (repeat); default: default, identity+average")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write per-pair results here")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an attribute of the global search, or of a pipeline's only registrar (repeatable)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    split = data / "roadscene" / f"{args.split}.txt" if args.split in ("test", "train") else Path(args.split)
    names = [n.rsplit(".", 1)[0] for n in io.read_split(split)]
    names = names[: args.limit] if args.limit else names
    models = args.model or ["default", "identity+average"]
    out = {}
    for model in models:
        pipe = load_pipeline(model)
        apply_overrides(pipe, args.set)
        out[model] = score(pipe, model, names, data)
    print(f"| pipeline | mean TRE raw px (vis px) | median | worst | <= 5 px | worse than identity | s / pair |")
    print("|---|---|---|---|---|---|---|")
    for model, r in out.items():
        print(f"| `{model}` | {r['mean_raw_px']:.2f} ({r['mean_vis_px']:.2f}) | {r['median_raw_px']:.2f} | "
              f"{r['max_raw_px']:.2f} | {r['within_5px']}/{len(names)} | {r['worse_than_identity']} | "
              f"{r['seconds_per_pair']:.2f} |")
    for model, r in out.items():
        if r["offset_mean_raw_px"] is not None:
            (mx, my), (sx, sy) = r["offset_mean_raw_px"], r["offset_std_raw_px"]
            print(f"`{model}`: mean check-point error vector over the pairs within 5 px: ({mx:+.2f}, {my:+.2f}) raw px, "
                  f"spread over pairs (std) ({sx:.2f}, {sy:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
