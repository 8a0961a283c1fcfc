"""The global stage's two finalists (the refined input vs the best distant start) on training pairs: their MIND
distances, orientation correlations and true errors, so a near/far decision rule can be chosen and checked.

    python benchmarks/global_alternatives.py record --preset none --preset large --raw --limit 30 --out alt.jsonl
    python benchmarks/global_alternatives.py replay alt.jsonl --far-margin 0.03 --agree-margin 0 0.02 --tiebreak 0.04 0.06

Only RoadScene ``train.txt`` names are read (``--dataset tno``: the TNO pairs, to check a rule chosen on them).
Errors: EPE (px) on synthetic pairs, TRE (raw IR px) on ``roadscene_raw``. ``--inverse`` also records each
finalist's inverse residual (``GlobalSearchRegistrar.inverse_residual``) and every finalist's mean displacement.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from alignfuse import io, synth, warp as warp_ops
from alignfuse.metrics import target_registration_error
from alignfuse.registration import GlobalSearchRegistrar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chain_policy import DATA, _tensors, record_replay_parser  # noqa: E402


def _field(matrix, h: int, w: int) -> np.ndarray:
    return warp_ops.field_from_matrix(torch.tensor([matrix], dtype=torch.float64), h, w)[0].numpy()


def record(args) -> int:
    torch.set_num_threads(args.threads)
    params = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.set or [])}
    # one search per pair (no rescue search, unless --set rescue_size=...): the records replay the acceptance rules
    # of a single search, comparable with those recorded before the rescue existed
    reg = GlobalSearchRegistrar(**{"min_gain": -1.0, "rescue_size": None, **params})
    names = [n.rsplit(".", 1)[0] for n in io.read_split(DATA / "roadscene" / "train.txt")]
    if args.names:  # a subset of the training names (e.g. benchmarks/splits/raw_train_probe.txt)
        subset = {n.rsplit(".", 1)[0] for n in io.read_split(Path(args.names))}
        names = [n for n in names if n in subset]
    names = names[: args.limit] if args.limit else names
    out = open(args.out, "a")

    def one(ir, vis, ir_size, error, **tags):
        moving, fixed = _tensors(ir, vis)
        h, w = moving.shape[-2:]
        t0 = time.perf_counter()
        matrix, d = reg.register_pair(moving, fixed, ir_size)
        seconds = time.perf_counter() - t0
        alt = d["alternatives"]
        r = {**tags, "ident_mind": d["mind_before"], "ident_orientation": alt["identity"]["orientation"],
             "before": error(np.zeros((2, h, w), np.float32)), "chosen": error(_field(matrix, h, w)),
             "seconds": seconds, "params": params}
        for k in ("near", "far"):
            r[k] = {"mind": alt[k]["mind"], "orientation": alt[k]["orientation"], "start": alt[k]["start"],
                    "error": error(_field(alt[k]["matrix"], h, w)),
                    "moved_px": float(np.sqrt((_field(alt[k]["matrix"], h, w) ** 2).sum(0)).mean())}
            if args.inverse:  # the swapped-pair refinement (GlobalSearchRegistrar.inverse_residual)
                r[k]["inverse"] = reg.inverse_residual(moving, fixed, np.asarray(alt[k]["matrix"]))
        out.write(json.dumps(r) + "\n")
        out.flush()
        print(f"{tags} {r['before']:.1f}: near {r['near']['error']:.2f} ({r['near']['mind']:.4f}, "
              f"{r['near']['orientation']:.3f}) far {r['far']['error']:.2f} ({r['far']['mind']:.4f}, "
              f"{r['far']['orientation']:.3f})", file=sys.stderr, flush=True)

    if args.raw:
        raw = DATA / "roadscene_raw"
        for name in names:
            pair = io.load_pair(raw / "ir_raw" / f"{name}.png", DATA / "roadscene" / "vi" / f"{name}.jpg")
            points = np.loadtxt(raw / "points" / f"{name}.csv", delimiter=",", skiprows=1, ndmin=2)
            one(pair.ir, pair.vis, pair.ir_size,
                lambda f, s=pair.ir_size, p=points: target_registration_error(io.field_to_ir_coordinates(f, s), p),
                dataset="roadscene_raw", preset="raw", name=name)
    if args.dataset == "tno":  # all 25 TNO pairs: a check after the choice, never a basis for it
        pairs = io.pair_folders(DATA / "tno" / "ir", DATA / "tno" / "vi")[0]
    else:
        pairs = io.pair_folders(DATA / "roadscene" / "ir", DATA / "roadscene" / "vi", names=names)[0]
    for preset in args.preset or []:
        spec = synth.parse_preset(preset)
        for stem, ir_path, vis_path in pairs:
            pair = io.load_pair(ir_path, vis_path)
            s = synth.synthesise_pair(pair.ir, pair.vis, spec, synth.pair_rng(args.seed, stem))
            v = s.valid if s.valid.sum() > 1 else np.ones_like(s.valid)
            one(s.ir_warp, s.vis, None,
                lambda f, t=s.field, m=v: float(np.sqrt(((f - t) ** 2).sum(0))[m].mean()),
                dataset=args.dataset, preset=preset, name=stem)
    return 0


def summary(rows: list[dict]) -> None:
    """The registrar's own choice per parameter set and preset: mean / worst error and seconds per pair."""
    table: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        if "chosen" in r:
            table.setdefault((json.dumps(r.get("params", {})), r["preset"]), []).append(r)
    if not table:
        return
    print("\n| parameters | preset | pairs | mean error | worst | s / pair |\n|---|---|---|---|---|---|")
    for (params, preset), v in table.items():
        e = np.array([r["chosen"] for r in v])
        print(f"| `{params}` | {preset} | {len(v)} | {e.mean():.2f} | {e.max():.2f} | "
              f"{np.mean([r['seconds'] for r in v]):.2f} |")


def replay(args) -> int:
    rows = [json.loads(line) for f in args.records for line in open(f)]
    summary(rows)
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["preset"], []).append(r)
    print("| rule | " + " | ".join(f"{k} ({len(v)}): mean / far kept / worse than near" for k, v in groups.items())
          + " |")
    print("|---|" + "---|" * len(groups))
    rules = [("MIND only", fm, None, None) for fm in args.far_margin]
    rules += [("MIND + orientation", fm, am, tb) for fm in args.far_margin for am in args.agree_margin
              for tb in args.tiebreak]
    for label, fm, am, tb in rules:
        cells = []
        for v in groups.values():
            errs, kept, bad = [], 0, 0
            for r in v:
                far = r["far"]["mind"] < r["near"]["mind"] * (1 - fm)
                if far and am is not None:
                    far = r["far"]["orientation"] >= r["near"]["orientation"] + am
                elif not far and tb is not None:  # GlobalSearchRegistrar.orientation_tiebreak
                    far = (r["far"]["mind"] <= r["near"]["mind"]
                           and r["far"]["orientation"] >= r["near"]["orientation"] + tb)
                e = r["far" if far else "near"]["error"]
                errs.append(e)
                kept += far
                bad += e > r["near"]["error"] + 1.0
            cells.append(f"{np.mean(errs):.2f} / {kept} / {bad}")
        print(f"| {label}, far margin {fm}" + (f", agree margin {am}" if am is not None else "")
              + (f", tie-break {tb}" if tb is not None else "") + " | "
              + " | ".join(cells) + " |")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap, rec, rep = record_replay_parser(__doc__)
    rec.add_argument("--raw", action="store_true")
    rec.add_argument("--names", help="a file of training names to record (a subset of train.txt)")
    rec.add_argument("--dataset", choices=("roadscene", "tno"), default="roadscene",
                     help="synthetic presets on RoadScene train names (for choosing) or on TNO (for checking only)")
    rec.add_argument("--inverse", action="store_true",
                     help="also record each finalist's inverse residual (refinement on the swapped pair)")
    rec.add_argument("--set", action="append", metavar="KEY=JSON",
                     help="a GlobalSearchRegistrar argument, e.g. finalists=[3,1] (repeat)")
    rep.add_argument("--far-margin", type=float, nargs="+", default=[0.03])
    rep.add_argument("--agree-margin", type=float, nargs="+", default=[0.0])
    rep.add_argument("--tiebreak", type=float, nargs="+", default=[None],
                     help="orientation tie-break margins to replay (GlobalSearchRegistrar.orientation_tiebreak)")
    args = ap.parse_args(argv)
    return record(args) if args.cmd == "record" else replay(args)


if __name__ == "__main__":
    raise SystemExit(main())
