"""Training recipes: one function per model that wires data, model, loss and optimiser into TrainLoop.

Each recipe has named configurations (``RECIPES[model][config]``); command-line overrides replace
single keys. Every run directory ends with ``export.safetensors`` + ``export.json`` (the shippable
weights and their constructor config) next to the resumable ``checkpoint.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .. import checkpoints
from .data import load_bank, shifted_crops
from .loop import LoopConfig, TrainLoop, setup_distributed

__all__ = ["RECIPES", "TrainArgs", "run_recipe"]


@dataclass
class TrainArgs:
    model: str
    data: Path
    split: Path | None
    config: str
    out: Path
    resume: bool = False
    device: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)
    progress: bool = True


RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "rfvif": {
        # shipped CPU run: width 16, 1 MSRB per part, 64 px crops, shifts in [-8, 8]^2
        "cpu": {"net": "cpu", "steps": 3000, "batch": 8, "crop": 64, "lr": 1e-3, "max_shift": 8,
                "features": "gradient", "checkpoint_every": 50, "log_every": 10},
        "paper": {"net": "paper", "steps": 186000, "batch": 8, "crop": 128, "lr": 1e-3, "max_shift": 8,
                  "features": "auto", "checkpoint_every": 500, "log_every": 50},
        "tiny": {"net": "cpu", "steps": 4, "batch": 2, "crop": 32, "lr": 1e-3, "max_shift": 4,
                 "features": "gradient", "checkpoint_every": 2, "log_every": 1},
    },
}


def _merged(args: TrainArgs) -> dict[str, Any]:
    table = RECIPES.get(args.model)
    if table is None:
        raise KeyError(f"no training recipe for {args.model!r}; known: {', '.join(RECIPES)}")
    if args.config not in table:
        raise KeyError(f"{args.model}: unknown config {args.config!r}; known: {', '.join(table)}")
    cfg = dict(table[args.config])
    unknown = set(args.overrides) - set(cfg)
    if unknown:
        raise KeyError(f"{args.model}: unknown override(s) {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update(args.overrides)
    return cfg


def _rfvif(args: TrainArgs, cfg: dict[str, Any]):
    from ..losses.rfvif import RFVIFLoss
    from ..models.rfvif import RFVIF, RFVIF_CONFIGS
    from ..models.vgg import build_feature_extractor

    dist = setup_distributed(args.device)
    torch.manual_seed(int(cfg.get("seed", 0)))
    net = RFVIF(cfg["net"]).to(dist.device)
    extractor = build_feature_extractor(cfg["features"], layers=("relu2_2",), arch="vgg16",
                                        normalize_imagenet=True).to(dist.device)
    loss_fn = RFVIFLoss(feature_extractor=lambda x: extractor(x)["relu2_2"])
    model = torch.nn.parallel.DistributedDataParallel(net) if dist.world_size > 1 else net
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    bank = load_bank(args.data, args.split)

    def step(rng, _step: int) -> dict[str, float]:
        vis, ir, gt, _ = shifted_crops(bank, rng, cfg["batch"], cfg["crop"], cfg["max_shift"])
        vis, ir, gt = vis.to(dist.device), ir.to(dist.device), gt.to(dist.device)
        out = model(ir, vis)
        total, terms = loss_fn(out.fused, out.aligned_ir, vis, gt)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return terms

    loop_cfg = LoopConfig(steps=cfg["steps"], seed=int(cfg.get("seed", 0)), checkpoint_every=cfg["checkpoint_every"],
                          log_every=cfg["log_every"], lr_milestones=(1 / 3, 2 / 3))
    run_cfg = {**cfg, "features_description": extractor.description, "data": str(args.data),
               "split": str(args.split)}

    def export(loop: TrainLoop) -> None:
        checkpoints.save_weights(net, args.out / "export", "rfvif", RFVIF_CONFIGS[cfg["net"]].to_dict()
                                 if isinstance(cfg["net"], str) else cfg["net"],
                                 training={**run_cfg, "steps_done": loop.step, "wall_s": round(loop.elapsed, 1)})

    return {"net": model}, {"adam": opt}, step, loop_cfg, run_cfg, dist, export


_BUILDERS: dict[str, Callable] = {"rfvif": _rfvif}


def run_recipe(args: TrainArgs) -> dict[str, float]:
    """Train (or resume) ``args.model`` with configuration ``args.config``; export weights at the end."""
    cfg = _merged(args)
    modules, optimizers, step_fn, loop_cfg, run_cfg, dist, export = _BUILDERS[args.model](args, cfg)
    loop = TrainLoop(args.out, modules, optimizers, step_fn, loop_cfg, run_cfg, dist, progress=args.progress)
    last = loop.run(resume=args.resume)
    if dist.is_main:
        export(loop)
    return last
