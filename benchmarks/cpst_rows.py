"""UMF-CMGR Table 1's CPST rows for our registrars: each registrar with the visible luminance as its reference and
with the CPSTN pseudo-IR (the paper's cross-modality perceptual style transfer) instead, on the same seeded pairs.

    python benchmarks/cpst_rows.py --preset umf --raw [--cpstn-weights DIR] [--mrrn-weights DIR] [--split FILE]
        [--limit N] [--json out.json]

Registrars: ``default`` (global search + MRRN chain), ``mrrn`` (the MRRN alone at 384 px), ``mind`` (per-pair MIND
optimisation), ``phase`` (phase correlation), ``ecc`` (OpenCV ECC on intensities: the classical counterpart of the
paper's intensity-based FlowNet / VoxelMorph rows, where a reference in the IR's modality should help most).
Synthetic presets: EPE (px) on RoadScene test (``--split``: another RoadScene split or names file, e.g. training
names for choosing a checkpoint); ``--raw``: TRE (raw IR px) on ``roadscene_raw`` test.
``--cpstn-weights``: a weights folder holding ``cpstn_cpu.*`` (default: shipped); ``--mrrn-weights``: one holding
``mrrn_cpu.*`` for the ``mrrn`` and ``default`` rows (default: shipped).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from alignfuse import io
from alignfuse.baselines import FUSERS, REGISTRARS
from alignfuse.model_pipelines import REGISTER_LONG_SIDE, _umf_registrar, load_cpstn, rig_registrar
from alignfuse.pipeline import Pipeline
from alignfuse.stages import IdentityTranslator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from registration_presets import DATA, run_pipeline  # noqa: E402
from roadscene_raw_tre import score  # noqa: E402

# name -> (registrar from the MRRN weights folder (None: shipped), working long side)
REGISTRARS_UNDER_TEST = {
    "default": (lambda w: rig_registrar(w), None),
    "mrrn": (lambda w: _umf_registrar(None, w, "mind"), REGISTER_LONG_SIDE),
    "mind": (lambda w: REGISTRARS["mind"](), None),
    "phase": (lambda w: REGISTRARS["phase"](), None),
    "ecc": (lambda w: REGISTRARS["ecc"](), None),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", action="append", default=[], help="synthetic presets on RoadScene test (repeat)")
    ap.add_argument("--raw", action="store_true", help="also roadscene_raw test (TRE)")
    ap.add_argument("--registrar", action="append", choices=sorted(REGISTRARS_UNDER_TEST))
    ap.add_argument("--cpstn-weights", help="weights folder with cpstn_cpu.* (default: the shipped CPSTN)")
    ap.add_argument("--mrrn-weights", help="weights folder with mrrn_cpu.* for the mrrn and default rows (default: "
                    "the shipped MRRN), e.g. an MRRN trained on pseudo-IR references")
    ap.add_argument("--split", default="test", help="RoadScene split name or names file for the presets")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpstn = load_cpstn(args.cpstn_weights)
    names = [n.rsplit(".", 1)[0] for n in io.read_split(DATA / "roadscene" / "test.txt")]
    names = names[: args.limit] if args.limit else names
    results = []
    print("| registrar | reference | data | pairs | error (px) | worst |\n|---|---|---|---|---|---|")
    for reg_name in args.registrar or list(REGISTRARS_UNDER_TEST):
        make, long_side = REGISTRARS_UNDER_TEST[reg_name]
        for ref_name, translator in (("visible", IdentityTranslator()), ("pseudo-IR (CPSTN)", cpstn)):
            pipe = Pipeline(translator, make(args.mrrn_weights), FUSERS["average"](), register_long_side=long_side,
                            name=f"{reg_name}/{ref_name}")
            for preset in args.preset:
                r = run_pipeline(pipe, pipe.name, "roadscene", args.split, preset, limit=args.limit, verbose=False)
                results.append({"registrar": reg_name, "reference": ref_name, "data": f"roadscene:{preset}",
                                "n": r["n"], "error": r["epe_mean"], "worst": r["worst"]})
                print(f"| {reg_name} | {ref_name} | RoadScene {Path(args.split).stem} `{preset}` EPE | {r['n']} | {r['epe_mean']:.2f} | "
                      f"{r['worst']:.2f} |", flush=True)
            if args.raw:
                r = score(pipe, pipe.name, names, DATA)
                results.append({"registrar": reg_name, "reference": ref_name, "data": "roadscene_raw",
                                "n": len(r["pairs"]), "error": r["mean_raw_px"], "worst": r["max_raw_px"],
                                "median": r["median_raw_px"]})
                print(f"| {reg_name} | {ref_name} | roadscene_raw test TRE (median {r['median_raw_px']:.2f}) | "
                      f"{len(r['pairs'])} | {r['mean_raw_px']:.2f} | {r['max_raw_px']:.2f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
