"""Tests that tell a real small misalignment from a network's answer to an aligned pair, for the local stage
of the default chain when no global correction was kept: MIND gain, field coherence (affine share) and inverse
consistency (the field of the swapped pair composed with the forward one, relative to the forward one).

    python benchmarks/local_gate.py record --preset none --preset umf --limit 30 --out gate.jsonl
    python benchmarks/local_gate.py replay gate.jsonl [--orientation 0.0 0.005]

RoadScene ``train.txt`` names are read (``--dataset tno``: the TNO pairs, to check a choice made on them
afterwards). EPE in px against the synthetic ground truth. ``orientation``: the rise of the gradient-orientation
correlation the field brings (``registration.chain.orientation_gain``), the global stage's second criterion.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from alignfuse import io, synth, warp as warp_ops
from alignfuse.model_pipelines import REGISTER_LONG_SIDE, _umf_registrar
from alignfuse.registration import affine_fraction
from alignfuse.registration.chain import inverse_residual, mind_gain, orientation_gain

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chain_policy import DATA, _tensors, record_replay_parser  # noqa: E402


def record(args) -> int:
    torch.set_num_threads(args.threads)
    reg = _umf_registrar(None, None, "mind")
    root = DATA / args.dataset
    names = [n.rsplit(".", 1)[0] for n in io.read_split(root / "train.txt")] if args.dataset == "roadscene" else None
    pairs = io.pair_folders(root / "ir", root / "vi", names=names)[0]
    pairs = pairs[: args.limit] if args.limit else pairs
    out = open(args.out, "a")
    for preset in args.preset or ["none", "umf"]:
        spec = synth.parse_preset(preset)
        for stem, ir_path, vis_path in pairs:
            pair = io.load_pair(ir_path, vis_path)
            s = synth.synthesise_pair(pair.ir, pair.vis, spec, synth.pair_rng(args.seed, stem))
            moving, fixed = _tensors(s.ir_warp, s.vis)
            h, w = moving.shape[-2:]
            k = REGISTER_LONG_SIDE / max(h, w)
            work = (round(h * k), round(w * k))
            m, f = warp_ops.resize_image(moving, work), warp_ops.resize_image(fixed, work)
            forward = reg(m, f).field
            full = warp_ops.resize_field(forward, (h, w))[0].numpy()
            v = s.valid if s.valid.sum() > 1 else np.ones_like(s.valid)

            def epe(field):
                return float(np.sqrt(((field - s.field) ** 2).sum(0))[v].mean())

            r = {"dataset": args.dataset, "preset": preset, "name": stem, "before": epe(np.zeros_like(full)), "after": epe(full),
                 "gain": mind_gain(moving, fixed, warp_ops.resize_field(forward, (h, w))),
                 "orientation": orientation_gain(moving, fixed, warp_ops.resize_field(forward, (h, w))),
                 "affine": affine_fraction(forward), "inverse": inverse_residual(reg, m, f, forward),
                 "shift": float(warp_ops.magnitude(forward).mean() / k)}
            out.write(json.dumps(r) + "\n")
            out.flush()
            print(f"{preset} {stem} {r['before']:.2f} -> {r['after']:.2f} gain {r['gain']:+.3f} affine "
                  f"{r['affine']:.2f} inverse {r['inverse']:.2f}", file=sys.stderr, flush=True)
    return 0


def replay(args) -> int:
    rows = [json.loads(line) for f in args.records for line in open(f)]
    for r in rows:  # records made before the dataset field existed are RoadScene's
        r["preset"] = r["preset"] if r.get("dataset", "roadscene") == "roadscene" else f"{r['dataset']}:{r['preset']}"
    presets = sorted({r["preset"] for r in rows})
    gates = [("gain >= 2 %", lambda r: r["gain"] >= 0.02)]
    gates += [(f"gain >= 2 %, affine >= {a}", lambda r, a=a: r["gain"] >= 0.02 and r["affine"] >= a) for a in (0.4, 0.5)]
    gates += [(f"gain >= 2 %, inverse <= {t}", lambda r, t=t: r["gain"] >= 0.02 and r["inverse"] <= t)
              for t in args.inverse]
    gates += [(f"gain >= 2 %, inverse <= 0.7, orientation rise >= {o}",
               lambda r, o=o: r["gain"] >= 0.02 and r["inverse"] <= 0.7 and r.get("orientation", np.inf) >= o)
              for o in args.orientation]
    print("| gate | " + " | ".join(f"{p} ({sum(r['preset'] == p for r in rows)}): EPE / kept" for p in presets) + " |")
    print("|---|" + "---|" * len(presets))
    for label, keep in gates:
        cells = []
        for p in presets:
            v = [r for r in rows if r["preset"] == p]
            cells.append(f"{np.mean([r['after'] if keep(r) else r['before'] for r in v]):.2f} / "
                         f"{sum(keep(r) for r in v)}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap, rec, rep = record_replay_parser(__doc__)
    rep.add_argument("--inverse", type=float, nargs="+", default=[0.6, 0.7, 0.8])
    rep.add_argument("--orientation", type=float, nargs="+", default=[0.0, 0.005, 0.01])
    rec.add_argument("--dataset", choices=("roadscene", "tno"), default="roadscene")
    args = ap.parse_args(argv)
    return record(args) if args.cmd == "record" else replay(args)


if __name__ == "__main__":
    raise SystemExit(main())
