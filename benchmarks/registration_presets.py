"""Registration accuracy on synthetic misalignment (seeded presets) and on aligned input, per pipeline.

For every pair the IR is misaligned with the preset (``alignfuse.synth``, seed 0, as ``alignfuse evaluate``) and
registered with ``register_arrays``; EPE = mean |field - ground-truth field| inside the valid region (px).
``--preset none`` measures what the registration does to pairs that are already aligned: mean |field| (px).

    python benchmarks/registration_presets.py --dataset roadscene --preset large --model default --model identity+average

``--set KEY=VALUE`` (repeatable) overrides an attribute of every pipeline's global search, as in
``roadscene_raw_tre.py`` (variants measured on training names: ``--split train``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from alignfuse import io, load_pipeline, synth
from alignfuse.api import register_arrays

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pairs_of(dataset: str, split: str | None):
    """Pairs of ``dataset``: all (``split`` None, or a name without a file there: TNO has no splits), the names of
    ``DATA/dataset/SPLIT.txt``, or of ``split`` as a path to a names file."""
    root = DATA / dataset
    if split and (root / f"{split}.txt").exists():
        names = io.read_split(root / f"{split}.txt")
    elif split and Path(split).is_file():
        names = io.read_split(Path(split))
    elif split and any(root.glob("*.txt")):
        raise SystemExit(f"{dataset} has no split {split!r} (and no such names file)")
    else:
        names = None
    return io.pair_folders(root / "ir", root / "vi", names=names)[0]


def run(model: str, dataset: str, split: str | None, preset: str, seed: int = 0, limit: int = 0,
        verbose: bool = True, overrides: tuple[str, ...] = (), **options) -> dict:
    pipe = load_pipeline(model, **options)
    if overrides:
        from roadscene_raw_tre import apply_overrides  # noqa: PLC0415  (a sibling script: the same --set)

        apply_overrides(pipe, list(overrides))
    return run_pipeline(pipe, model, dataset, split, preset, seed, limit, verbose)


def run_pipeline(pipe, model: str, dataset: str, split: str | None, preset: str, seed: int = 0, limit: int = 0,
                 verbose: bool = True) -> dict:
    """:func:`run` for a pipeline object (``model`` labels it)."""
    spec = synth.parse_preset(preset)
    rows = []
    pairs = pairs_of(dataset, split)
    for stem, ir_path, vis_path in pairs[:limit] if limit else pairs:
        pair = io.load_pair(ir_path, vis_path)
        s = synth.synthesise_pair(pair.ir, pair.vis, spec, synth.pair_rng(seed, stem))
        t0 = time.perf_counter()
        res = register_arrays(s.ir_warp, s.vis, pipe, warn=False)
        dt = time.perf_counter() - t0
        v = s.valid if s.valid.sum() > 1 else np.ones_like(s.valid)
        err = np.sqrt(((res.field - s.field) ** 2).sum(0))[v]
        stages = {st["name"]: (bool(st["accepted"]), float(st["gain"])) for st in res.diagnostics.get("stages", [])}
        rows.append({"name": stem, "epe": float(err.mean()), "field_mean": float(np.sqrt((res.field ** 2).sum(0)).mean()),
                     "initial": float(np.sqrt((s.field ** 2).sum(0))[v].mean()), "seconds": dt, "stages": stages})
        if verbose:
            print(f"{model:>18s} {dataset}:{preset} {stem} {rows[-1]['initial']:6.2f} -> {rows[-1]['epe']:6.2f} px "
                  f"{stages} ({dt:.2f} s)", file=sys.stderr, flush=True)
    epe = np.array([r["epe"] for r in rows])
    ini = np.array([r["initial"] for r in rows])
    return {"model": model, "dataset": dataset, "preset": preset, "n": len(rows), "epe_mean": float(epe.mean()),
            "initial_mean": float(ini.mean()), "cut": float(1 - epe.mean() / max(ini.mean(), 1e-12)),
            "field_mean": float(np.mean([r["field_mean"] for r in rows])), "worst": float(epe.max()),
            "seconds": float(np.mean([r["seconds"] for r in rows])), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", action="append", help="roadscene | tno (repeat); default both")
    ap.add_argument("--split", default="test", help="RoadScene split (TNO has none)")
    ap.add_argument("--preset", action="append", help="synth presets (repeat), 'none' = aligned; default umf")
    ap.add_argument("--model", action="append", help="pipelines (repeat); default: default")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="append the results (JSON lines) to this file")
    ap.add_argument("-q", "--quiet", action="store_true")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an attribute of the global search (repeatable)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print("| dataset | preset | pipeline | pairs | initial px | EPE px | cut | worst px | mean field px | s / pair |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dataset in args.dataset or ["roadscene", "tno"]:
        for preset in args.preset or ["umf"]:
            for model in args.model or ["default"]:
                r = run(model, dataset, args.split if dataset == "roadscene" else None, preset, limit=args.limit,
                        verbose=not args.quiet, overrides=tuple(args.set))
                cut = f"{100 * r['cut']:.1f} %" if r["initial_mean"] > 1e-6 else "–"  # aligned input: nothing to cut
                print(f"| {dataset} | `{preset}` | `{model}` | {r['n']} | {r['initial_mean']:.2f} | {r['epe_mean']:.2f} | "
                      f"{cut} | {r['worst']:.2f} | {r['field_mean']:.2f} | {r['seconds']:.2f} |", flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
