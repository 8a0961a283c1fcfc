"""Record what each stage of the default chain would do on training pairs, to choose its acceptance policy.

Every stage is *always* applied (no gate, no dead zone) and every candidate is scored, so any acceptance policy
can be replayed offline from the record: per pair, the global stage's own diagnostics (its MIND gain over the
identity, the refined identity start against the best distant start), the chain's MIND gain of each stage, and
the error after each stage (EPE in px against the synthetic ground truth; TRE in raw IR px on ``roadscene_raw``).

    python benchmarks/chain_policy.py record --preset none --preset umf --preset large --limit 30 --out rec.jsonl
    python benchmarks/chain_policy.py record --raw --limit 60 --out rec.jsonl     # roadscene_raw train pairs
    python benchmarks/chain_policy.py replay rec.jsonl                            # the policies compared

Only training names are read (RoadScene ``train.txt``); the test names are for the scoring scripts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from alignfuse import io, synth, warp as warp_ops
from alignfuse.metrics import target_registration_error
from alignfuse.model_pipelines import REGISTER_LONG_SIDE, _umf_registrar
from alignfuse.registration import ChainRegistrar, GlobalSearchRegistrar, Stage
from alignfuse.stages import luminance

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _chains() -> tuple[ChainRegistrar, ChainRegistrar]:
    always = -math.inf
    glob = GlobalSearchRegistrar(min_gain=-1.0, rescue_size=None)  # one search: every gain recorded, none re-searched
    local = _umf_registrar(None, None, "mind")
    both = ChainRegistrar([Stage("global", glob, None, always), Stage("local", local, REGISTER_LONG_SIDE, always)],
                          dead_zone=0.0)
    # the judge is only computed when a stage needs it: a finite but unreachable gain keeps it on
    for st in both.stages:
        st.min_gain = -1e9
    only_local = ChainRegistrar([Stage("local", local, REGISTER_LONG_SIDE, -1e9)], dead_zone=0.0)
    return both, only_local


def _tensors(ir: np.ndarray, vis: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.from_numpy(np.ascontiguousarray(ir, dtype=np.float32))[None, None]
    v = torch.from_numpy(np.ascontiguousarray(vis, dtype=np.float32))
    v = v.permute(2, 0, 1)[None] if v.ndim == 3 else v[None, None]
    return m, luminance(v)


def _record_one(chains, ir, vis, ir_size, error) -> dict:
    """error(field (2, H, W) numpy) -> px. Returns the pair's record."""
    both, only_local = chains
    moving, fixed = _tensors(ir, vis)
    h, w = moving.shape[-2:]
    res = both(moving, fixed, ir_size=ir_size)
    d = res.diagnostics[0]
    g_stage, l_stage = d["stages"]
    g_own = g_stage["diagnostics"]
    g_field = warp_ops.field_from_matrix(torch.tensor([g_own["matrix"]], dtype=torch.float64), h, w)[0].numpy()
    loc = only_local(moving, fixed)
    ld = loc.diagnostics[0]["stages"][0]
    zero = np.zeros((2, h, w), np.float32)
    gl_field = float(warp_ops.magnitude(res.field).mean())
    return {"before": error(zero), "global": error(g_field), "global_local": error(res.field[0].numpy()),
            "local": error(loc.field[0].numpy()),
            "g_gain_own": g_own["gain"], "g_near": g_own["alternatives"]["near"]["mind"],
            "g_far": g_own["alternatives"]["far"]["mind"],
            "g_ident": g_own["mind_before"], "g_start": g_own["start"], "g_shift": g_stage["mean_shift_px"],
            "g_gain": g_stage["gain"], "gl_gain": l_stage["gain"], "gl_shift": l_stage["mean_shift_px"],
            "gl_affine": l_stage["affine_fraction"], "l_affine": ld["affine_fraction"],
            "l_gain": ld["gain"], "l_shift": ld["mean_shift_px"], "gl_field": gl_field, "long_side": max(h, w)}


def record(args) -> int:
    torch.set_num_threads(args.threads)
    chains = _chains()
    names = [n.rsplit(".", 1)[0] for n in io.read_split(DATA / "roadscene" / "train.txt")]
    names = names[: args.limit] if args.limit else names
    out = open(args.out, "a")
    if args.raw:
        raw = DATA / "roadscene_raw"
        for name in names:
            pair = io.load_pair(raw / "ir_raw" / f"{name}.png", DATA / "roadscene" / "vi" / f"{name}.jpg")
            points = np.loadtxt(raw / "points" / f"{name}.csv", delimiter=",", skiprows=1, ndmin=2)

            def error(field, size=pair.ir_size):
                return target_registration_error(io.field_to_ir_coordinates(field, size), points)

            r = _record_one(chains, pair.ir, pair.vis, pair.ir_size, error)
            r.update(dataset="roadscene_raw", preset="raw", name=name)
            out.write(json.dumps(r) + "\n")
            out.flush()
            print(f"raw {name} {r['before']:.1f} -> g {r['global']:.2f} gl {r['global_local']:.2f} "
                  f"l {r['local']:.2f}", file=sys.stderr, flush=True)
        return 0
    pairs = io.pair_folders(DATA / "roadscene" / "ir", DATA / "roadscene" / "vi", names=names)[0]
    for preset in args.preset or ["umf"]:
        spec = synth.parse_preset(preset)
        for stem, ir_path, vis_path in pairs:
            pair = io.load_pair(ir_path, vis_path)
            s = synth.synthesise_pair(pair.ir, pair.vis, spec, synth.pair_rng(args.seed, stem))
            v = s.valid if s.valid.sum() > 1 else np.ones_like(s.valid)

            def error(field, truth=s.field, valid=v):
                return float(np.sqrt(((field - truth) ** 2).sum(0))[valid].mean())

            r = _record_one(chains, s.ir_warp, s.vis, None, error)
            r.update(dataset="roadscene", preset=preset, name=stem)
            out.write(json.dumps(r) + "\n")
            out.flush()
            print(f"{preset} {stem} {r['before']:.2f} -> g {r['global']:.2f} gl {r['global_local']:.2f} "
                  f"l {r['local']:.2f} (g gain {r['g_gain']:+.3f}, l gain {r['l_gain']:+.3f})", file=sys.stderr,
                  flush=True)
    return 0


def policy(r: dict, global_min_gain: float, far_margin: float, min_shift: float, local_min_gain: float,
           dead_zone: float, local_min_affine: float = 0.0) -> float:
    """The error the chain would leave on the record ``r`` under the given thresholds (the dead zone tests the
    mean displacement of the composed field)."""
    use_global = r["g_gain"] >= global_min_gain and r["g_shift"] >= min_shift * r["long_side"]
    if use_global and r["g_start"] != "identity" and r["g_near"] <= r["g_far"] / (1 - far_margin):
        use_global = False  # recorded with the default far margin; stricter margins can only reject more
    if use_global:
        keep_local = r["gl_gain"] >= local_min_gain  # after a global correction: no coherence gate
        err, shift = (r["global_local"], r.get("gl_field", r["g_shift"])) if keep_local else (r["global"], r["g_shift"])
    else:
        keep_local = r["l_gain"] >= local_min_gain and r.get("l_affine", 1.0) >= local_min_affine
        err, shift = (r["local"], r["l_shift"]) if keep_local else (r["before"], 0.0)
    if 0 < shift < dead_zone * r["long_side"]:
        err = r["before"]
    return err


def replay(args) -> int:
    rows = [json.loads(line) for f in args.records for line in open(f)]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"{r['dataset']}:{r['preset']}", []).append(r)
    grid = [dict(global_min_gain=g, far_margin=0.03, min_shift=ms, local_min_gain=lg, dead_zone=dz,
                 local_min_affine=la)
            for g in args.global_min_gain for ms in args.min_shift for lg in args.local_min_gain
            for dz in args.dead_zone for la in args.local_min_affine]
    print("| policy | " + " | ".join(f"{k} ({len(v)})" for k, v in groups.items()) + " |")
    print("|---|" + "---|" * len(groups))
    print("| before | " + " | ".join(f"{np.mean([r['before'] for r in v]):.2f}" for v in groups.values()) + " |")
    for p in grid:
        cells = [f"{np.mean([policy(r, **p) for r in v]):.2f}" for v in groups.values()]
        label = ", ".join(f"{k}={val}" for k, val in p.items() if k != "far_margin")
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


def record_replay_parser(doc: str) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser,
                                            argparse.ArgumentParser]:
    """The command line the acceptance-policy benchmarks share -> (parser, ``record`` subparser with --preset,
    --limit, --seed, --threads, --out; ``replay`` subparser with the record files)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("--preset", action="append")
    rec.add_argument("--limit", type=int, default=30)
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument("--threads", type=int, default=1)
    rec.add_argument("--out", required=True)
    rep = sub.add_parser("replay")
    rep.add_argument("records", nargs="+")
    return ap, rec, rep


def main(argv: list[str] | None = None) -> int:
    ap, rec, rep = record_replay_parser(__doc__)
    rec.add_argument("--raw", action="store_true", help="roadscene_raw train pairs instead of synthetic presets")
    rep.add_argument("--global-min-gain", type=float, nargs="+", default=[0.02])
    rep.add_argument("--min-shift", type=float, nargs="+", default=[0.015])
    rep.add_argument("--local-min-gain", type=float, nargs="+", default=[0.035])
    rep.add_argument("--dead-zone", type=float, nargs="+", default=[0.0035])
    rep.add_argument("--local-min-affine", type=float, nargs="+", default=[0.0])
    args = ap.parse_args(argv)
    return record(args) if args.cmd == "record" else replay(args)


if __name__ == "__main__":
    raise SystemExit(main())
