"""Other rigs than RoadScene's: aligned *training* pairs re-delivered through IR cameras of other geometries.

    python benchmarks/rig_zoo.py [--data ../shared/data/roadscene] [--pairs 8] [--model default] [--threads 1]
        [--ir-field narrower] [--case NAME ...]

``roadscene_raw`` is one rig family (a wide-field 640x512 IR against visible crops). Rigs in the field also have
an IR with a *narrower* field of view than the visible camera (drone gimbals, surveillance masts), sensors of
other sizes (320x256, 640x480) and more roll. Each case renders the IR frame a camera of that geometry would
record of an aligned pair (``synth_rig.deliver_ir``: visible pixel -> raw IR pixel homography, reflection outside
the scene) and scores the pipeline's field against the exact one (``synth_rig.true_field``), in visible pixels,
over the visible pixels the IR sees. Pairs: every ``len(train) // pairs``-th name of RoadScene ``train.txt``
(nothing here is a test name). Reported per case: mean and median EPE, pairs within 3 px, pairs whose EPE is
worse than the identity's, seconds per pair.

Cases (``scale`` = raw IR px per visible px relative to matched widths; < 1: the IR sees a wider field):
wide (0.75, the RoadScene family), same (1.0, 5 deg roll), narrow (1.3, 1.5, 1.8: the IR sees 77 %, 67 %,
56 % of the visible width), small sensor (320x256, scale 0.9), 4:3 sensor (640x480, scale 1.2, -8 deg roll).
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

from alignfuse import io
from alignfuse.api import load_pipeline, register_arrays
from alignfuse.synth_rig import deliver_ir, example_rig, seen_by_ir, true_field
from roadscene_raw_tre import apply_overrides

ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "roadscene"

# name: (IR sensor (w, h), scale, roll deg, shift as a fraction of the IR frame (x, y))
CASES = {
    "wide 0.75": ((640, 512), 0.75, 2.0, (0.06, -0.04)),
    "same 1.0, roll 5": ((640, 512), 1.0, 5.0, (-0.08, 0.05)),
    "narrow 1.3": ((640, 512), 1.3, -3.0, (0.05, 0.06)),
    "narrow 1.5": ((640, 512), 1.5, 2.0, (-0.04, -0.05)),
    "narrow 1.8": ((640, 512), 1.8, 0.0, (0.03, 0.02)),
    "320x256, 0.9": ((320, 256), 0.9, -2.0, (0.07, 0.03)),
    "640x480, 1.2, roll -8": ((640, 480), 1.2, -8.0, (-0.05, 0.04)),
}


def run_case(pipe, names: list[str], data: Path, case: tuple) -> dict:
    ir_size, scale, roll, (fx, fy) = case
    rows = []
    for name in names:
        stem = Path(name).stem
        pair = io.load_pair(next((data / "ir").glob(stem + ".*")), next((data / "vi").glob(stem + ".*")))
        vh, vw = pair.vis_y.shape
        matrix = example_rig((vw, vh), ir_size, shift=(fx * ir_size[0], fy * ir_size[1]), scale=scale,
                             angle_deg=roll, perspective=0.0)
        ir_raw = deliver_ir(pair.ir, matrix, ir_size)
        truth = true_field(matrix, (vw, vh), ir_size)
        mask = seen_by_ir(matrix, (vw, vh), ir_size)
        t0 = time.perf_counter()
        result = register_arrays(ir_raw, pair.vis, pipe, warn=False)
        dt = time.perf_counter() - t0
        field = result.field.detach().cpu().numpy().reshape(2, vh, vw) if hasattr(result.field, "detach") \
            else np.asarray(result.field).reshape(2, vh, vw)
        epe = float(np.hypot(*(field - truth))[mask].mean())
        ident = float(np.hypot(*truth)[mask].mean())
        rows.append({"name": name, "epe": epe, "identity": ident, "seconds": dt,
                     "suspect": bool(result.diagnostics.get("suspect"))})
        print(f"  {name}: {ident:6.1f} -> {epe:6.2f} px ({dt:.2f} s)", file=sys.stderr, flush=True)
    e = np.array([r["epe"] for r in rows])
    return {"mean": float(e.mean()), "median": float(np.median(e)), "within3": int((e <= 3).sum()),
            "worse": int(sum(r["epe"] > r["identity"] for r in rows)), "identity": float(np.mean([r["identity"] for r in rows])),
            "suspect": int(sum(r["suspect"] for r in rows)), "seconds": float(np.mean([r["seconds"] for r in rows])),
            "n": len(rows)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT))
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--model", default="default")
    ap.add_argument("--case", action="append", help="case names (repeat); default: all")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ir-field", default=None, choices=["wider", "narrower"],
                    help="the pipeline's ir_field option (what `--ir-field` sets on the command line)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an attribute of the global search (repeatable; roadscene_raw_tre.py --set)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    train = io.read_split(data / "train.txt")
    names = train[:: max(1, len(train) // args.pairs)][: args.pairs]
    pipe = load_pipeline(args.model, **({"ir_field": args.ir_field} if args.ir_field else {}))
    apply_overrides(pipe, args.set)
    print(f"# rig zoo, {args.model}{' --ir-field ' + args.ir_field if args.ir_field else ''}, {len(names)} RoadScene training pairs, {date.today()}, "
          f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)")
    print("| case | identity EPE (vis px) | mean EPE | median | <= 3 px | worse than identity | suspect | s / pair |")
    print("|---|---|---|---|---|---|---|---|")
    for label in args.case or CASES:
        r = run_case(pipe, names, data, CASES[label])
        print(f"| {label} | {r['identity']:.1f} | {r['mean']:.2f} | {r['median']:.2f} | {r['within3']}/{r['n']} | "
              f"{r['worse']} | {r['suspect']} | {r['seconds']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
