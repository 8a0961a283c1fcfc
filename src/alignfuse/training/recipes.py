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
from ..errors import UnknownNameError, UserError
from ..learned_stages import weights_path
from .data import degrade_sources, load_bank, paired_crops, pick_image, resize_bank, shifted_crops, swap_sources
from .loop import LoopConfig, TrainLoop, setup_distributed

__all__ = ["RECIPES", "COMMON_KEYS", "TrainArgs", "run_recipe", "cpstn_generator_state"]


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
        # the paper-loss CPU run (rfvif_paper_cpu; shipped as rfvif_cpu until 2026-12-01): the `fast-skip` net (no
        # full-resolution MSRBs + the
        # full-resolution visible skip, RFVIFConfig.vis_skip), 64 px crops, shifts in [-8, 8]^2, paper loss
        # with the gradient-pyramid perceptual substitute. Earlier shipped weights: `--set net=cpu`. Tried and
        # not shipped (docs/RESULTS.md §3.7): `--set net=fast --set grad_weight=10`.
        # `variant`: comma-separated RFVIFConfig overrides for ablations, e.g. "use_dkg=false,num_fab=1".
        # teacher: a pipeline name (e.g. "identity+gff") whose fusion of each *aligned* training pair is an
        # extra L1 target with weight teacher_weight (RFVIFLoss); "" = paper loss. init: warm-start export
        # ("shipped" = the packaged rfvif_cpu, "shipped-paper" = rfvif_paper_cpu, the paper-loss weights).
        # objective: "paper" (Eq. 18) or "fusion" (RFVIFLoss).
        "cpu": {"net": "fast-skip", "variant": "", "steps": 8000, "batch": 8, "crop": 64, "lr": 1e-3, "max_shift": 8,
                "features": "gradient", "grad_weight": 0.0, "teacher": "", "teacher_weight": 0.0, "init": "",
                "objective": "paper", "fusion_grad_weight": 30.0, "fusion_int_weight": 1.0,
                "checkpoint_every": 50, "log_every": 10},
        # stage 1 of the shipped rfvif_cpu: the same net with the loss's "fusion" objective (losses/rfvif.py: SSIM
        # of both sources, the stronger source gradient, max(IR, VIS) intensity, against the aligned pair;
        # alignment term kept), warm-started from the paper-loss weights. Stage 2 (MODEL_CARD): init=stage 1,
        # steps=1500, fusion_int_weight=10, lr=2.5e-4.
        "cpu-fusion": {"net": "fast-skip", "variant": "", "steps": 3000, "batch": 8, "crop": 96, "lr": 5e-4,
                       "max_shift": 8, "features": "gradient", "grad_weight": 0.0, "teacher": "", "teacher_weight": 0.0,
                       "init": "shipped-paper", "objective": "fusion", "fusion_grad_weight": 30.0,
                       "fusion_int_weight": 1.0, "checkpoint_every": 50, "log_every": 10},
        # the full-resolution IR path (RFVIFConfig.ir_skip) grown on the stage-2 weights, stage 2's loss. init: the
        # stage-2 export, shipped as rfvif_cpu until 2026-12-02 (`git show 4871c01:src/alignfuse/weights/
        # rfvif_cpu.safetensors` and `.json`, saved side by side as S2.safetensors / S2.json, then --set init=S2);
        # "" trains the net from scratch
        "cpu-irskip": {"net": "fast-irskip", "variant": "", "steps": 3000, "batch": 8, "crop": 96, "lr": 2.5e-4,
                       "max_shift": 8, "features": "gradient", "grad_weight": 0.0, "teacher": "", "teacher_weight": 0.0,
                       "init": "", "objective": "fusion", "fusion_grad_weight": 30.0,
                       "fusion_int_weight": 10.0, "checkpoint_every": 50, "log_every": 10},
        # stage 3 of the shipped rfvif_cpu: the global shift prior (RFVIFConfig.shift_prior) grown on the stage-2
        # weights (init: as for cpu-irskip), stage 2's loss + shift_weight * mean |estimate - known shift| (px); the
        # estimator learns at shift_lr_scale x lr, and its estimate enters the warp ramped from 0 to 1 over the
        # first shift_ramp steps
        "cpu-shift": {"net": "fast-shift", "variant": "", "steps": 2000, "batch": 8, "crop": 96, "lr": 5e-4,
                      "max_shift": 8, "features": "gradient", "grad_weight": 0.0, "teacher": "", "teacher_weight": 0.0,
                      "init": "", "objective": "fusion", "fusion_grad_weight": 30.0,
                      "fusion_int_weight": 10.0, "shift_weight": 0.1, "shift_lr_scale": 10.0, "shift_ramp": 400,
                      "checkpoint_every": 50, "log_every": 10},
        # stage 4 of the shipped rfvif_cpu (issue 15): the stage-3 weights fine-tuned with the fusion objective's
        # metric-shaped terms (losses/pwf.py: 1 - differentiable Qabf, SD shortfall), the shift prior on from the
        # first step. The run used init=shipped when stage 3 was shipped; to reproduce it now, save `git show
        # a1a9709:src/alignfuse/weights/rfvif_cpu.safetensors` (and `.json`) as S3.safetensors / S3.json and
        # --set init=S3 (the shipped weights now hold the pyramid head of stage 5, below)
        "cpu-metric": {"net": "fast-shift", "variant": "", "steps": 800, "batch": 8, "crop": 96, "lr": 2e-4,
                       "max_shift": 8, "features": "gradient", "grad_weight": 0.0, "teacher": "", "teacher_weight": 0.0,
                       "init": "", "objective": "fusion", "fusion_grad_weight": 30.0,
                       "fusion_int_weight": 10.0, "fusion_qabf_weight": 2.0, "fusion_sd_weight": 5.0,
                       "shift_weight": 0.1, "shift_lr_scale": 1.0, "shift_ramp": 1,
                       "checkpoint_every": 50, "log_every": 10},
        # stage 5 of the shipped rfvif_cpu (issue 15; an extension, off in the paper config): cpu-metric with the
        # pyramid-weight output head (RFVIFConfig.pyramid_head, net `fast-shift-pyr`) grown on the stage-4 weights:
        # every tensor but the new pyr_* ones loads, the head learns at head_lr (the rest at lr); w_hot > 0 adds
        # w_hot x the hot-target contrast shortfall of the aligned IR (losses/pwf.py hot_target_shortfall, the PWF
        # round-3 term). 192 px crops at batch 2 (cpu-metric's pixels per step): the shift estimate is ~0.8 px off
        # on them against ~2 px on 96 px crops. The defaults are the 2026-12-07 run chosen on the 19 selection
        # pairs; the other two runs of that session: --set crop=96 --set batch=8 --set head_lr=5e-4 --set w_hot=0,
        # and --set w_hot=0. The run used init=shipped when stage 4 was shipped; to reproduce it now, save `git show
        # 2474315:src/alignfuse/weights/rfvif_cpu.safetensors` (and `.json`) as S4.safetensors / S4.json and --set
        # init=S4 ("shipped" now fine-tunes stage 5 itself)
        "cpu-pyramid": {"net": "fast-shift-pyr", "variant": "", "steps": 800, "batch": 2, "crop": 192, "lr": 2e-4,
                        "head_lr": 2e-3, "w_hot": 1.0, "max_shift": 8, "features": "gradient", "grad_weight": 0.0,
                        "teacher": "", "teacher_weight": 0.0, "init": "shipped", "objective": "fusion",
                        "fusion_grad_weight": 30.0, "fusion_int_weight": 10.0, "fusion_qabf_weight": 2.0,
                        "fusion_sd_weight": 5.0, "shift_weight": 0.1, "shift_lr_scale": 1.0, "shift_ramp": 1,
                        "checkpoint_every": 50, "log_every": 10},
        "paper": {"net": "paper", "variant": "", "steps": 186000, "batch": 8, "crop": 128, "lr": 1e-3,
                  "max_shift": 8, "features": "auto", "grad_weight": 0.0, "teacher": "", "teacher_weight": 0.0,
                  "init": "", "objective": "paper", "fusion_grad_weight": 30.0, "fusion_int_weight": 1.0,
                  "checkpoint_every": 500, "log_every": 50},
        "tiny": {"net": "cpu", "variant": "", "steps": 4, "batch": 2, "crop": 32, "lr": 1e-3, "max_shift": 4,
                 "features": "gradient", "grad_weight": 10.0, "teacher": "", "teacher_weight": 0.0, "init": "",
                 "objective": "paper", "fusion_grad_weight": 30.0, "fusion_int_weight": 1.0,
                 "checkpoint_every": 2, "log_every": 1},
    },
    # CPSTN in paired mode (same crop and flip of the aligned VIS/IR; spec pitfall 5). Official: batch 1,
    # lr 2e-4, Adam(0.5, 0.999), linear decay over the second half. `paired_l1` (default 0 = paper) adds
    # L1(G_A(vis), ir), a supervised term that only paired data allows (a documented deviation). `objective`
    # "paper" = the CPSTN losses (+ paired_l1); "supervised" = G_A alone on the paired loss (cpu-supervised below).
    "cpstn": {
        "cpu": {"net": "cpu", "steps": 6000, "batch": 1, "crop": 128, "lr": 2e-4, "features": "gradient",
                "paired_l1": 10.0, "objective": "paper", "edge_weight": 0.0, "mind_weight": 0.0,
                "nyquist_weight": 0.0, "init": "",
                "checkpoint_every": 100, "log_every": 20},
        "paper": {"net": "paper", "steps": 44200, "batch": 1, "crop": 256, "lr": 2e-4, "features": "auto",
                  "paired_l1": 0.0, "objective": "paper", "edge_weight": 0.0, "mind_weight": 0.0,
                  "nyquist_weight": 0.0, "init": "",
                  "checkpoint_every": 1000, "log_every": 100},
        "tiny": {"net": "tiny", "steps": 3, "batch": 1, "crop": 32, "lr": 2e-4, "features": "gradient",
                 "paired_l1": 10.0, "objective": "paper", "edge_weight": 0.0, "mind_weight": 0.0,
                 "nyquist_weight": 0.0, "init": "",
                 "checkpoint_every": 1, "log_every": 1},
        # issue 18: artefact-free upsampling, 6 blocks, larger crops for context; a long schedule meant to be
        # resumed across sessions (the linear decay of its second half starts at step 20000)
        "cpu-resize": {"net": "cpu-resize", "steps": 40000, "batch": 1, "crop": 192, "lr": 2e-4, "features": "gradient",
                       "paired_l1": 10.0, "objective": "paper", "edge_weight": 0.0, "mind_weight": 0.0,
                       "nyquist_weight": 0.0, "init": "",
                       "checkpoint_every": 200, "log_every": 50},
        # issue 18, a documented deviation: objective "supervised" trains G_A alone on the paired loss
        # paired_l1 * L1(G_A(vis), ir) + edge_weight * Edge(G_A(vis), ir) (no cycle, no GAN, no PST: ~4x cheaper
        # per step, and the adversarial/style terms were what moved cpu-resize away from the real IR late in
        # training). init: a cpu-resize checkpoint.pt or export whose G_A starts the run.
        "cpu-supervised": {"net": "cpu-resize", "steps": 8000, "batch": 4, "crop": 192, "lr": 2e-4,
                           "features": "gradient", "paired_l1": 10.0, "objective": "supervised", "edge_weight": 8.0,
                           "mind_weight": 0.0, "nyquist_weight": 0.0, "init": "", "checkpoint_every": 100,
                           "log_every": 20},
        # issue 18: the supervised objective aimed at what the registrars compare, local structure:
        # + mind_weight * mean |MIND(G_A(vis)) - MIND(ir)| (losses/mind.py; contrast-invariant, so a small paired
        # L1 keeps the intensities). init: the cpu-supervised export (training_runs/cpstn_supervised/).
        "cpu-mind": {"net": "cpu-resize", "steps": 3000, "batch": 4, "crop": 192, "lr": 1e-4, "features": "gradient",
                     "paired_l1": 1.0, "objective": "supervised", "edge_weight": 0.0, "mind_weight": 10.0,
                     "nyquist_weight": 0.0,
                     "init": "training_runs/cpstn_supervised/export.safetensors", "checkpoint_every": 100,
                     "log_every": 20},
        # issue 18: cpu-mind brought the checkerboard back (MIND's 2 px neighbourhood rewards a period-2 texture on
        # flat regions); + nyquist_weight * the period-2 texture beyond the real IR's (losses.translation
        # .nyquist_excess). The same start and schedule as cpu-mind (the cpu-supervised export).
        "cpu-mind-nyquist": {"net": "cpu-resize", "steps": 3000, "batch": 4, "crop": 192, "lr": 1e-4,
                             "features": "gradient", "paired_l1": 1.0, "objective": "supervised", "edge_weight": 0.0,
                             "mind_weight": 10.0, "nyquist_weight": 200.0,
                             "init": "training_runs/cpstn_supervised/export.safetensors", "checkpoint_every": 100,
                             "log_every": 20},
    },
    # MRRN on (reference, IR distorted by a synthetic generator). The paper: pseudo-IR reference from a trained
    # CPSTN, unsupervised. translator: a CPSTN export (safetensors), "shipped" (the CPSTN that ships with alignfuse,
    # weights/cpstn_cpu) or "none" (VIS luminance as the reference).
    "mrrn": {
        # stage 1 of the shipped mrrn_cpu (session 4; stage 2 = init from it, lr 3e-4, zero_fraction 0.1, 3000
        # steps, see MODEL_CARD.md): MIND-input MRRN (`cpu-mind`) on the *visible* reference, supervised by
        # the synthetic field (flow_weight, EPE in px) + NCC of the warped IR against the aligned IR
        # (target=ir_gt), 20 % mono-modal samples. Every earlier set-up (pseudo-IR or VIS reference with
        # intensity inputs, with or without flow supervision) stayed at the input's EPE (docs/RESULTS.md §1.10).
        # 160 px crops with the umf generator scaled x2 (alpha, translation): the official generator works in
        # normalised units, so on a crop it would be ~2x weaker than on our ~384 px working images.
        # long_side: > 0 resizes the training images to that long side first, as the pipelines do before
        # registering (REGISTER_LONG_SIDE = 384), so crops show the texture scale the network sees in use.
        # preset may list alternatives separated by "|" (one drawn per sample), e.g. several elastic scales.
        "cpu": {"net": "cpu-mind", "steps": 4000, "batch": 4, "crop": 160, "lr": 1e-3, "similarity": "ncc",
                "smooth": "l2", "lambda_smooth": 10.0, "preset": "custom:tfrac=0.02,elastic=1,alpha=2",
                "translator": "none", "mono_fraction": 0.2, "zero_fraction": 0.0, "target": "ir_gt",
                "flow_weight": 1.0, "arch": "mrrn", "init": "", "long_side": 0, "checkpoint_every": 100, "log_every": 20},
        # the `cpu` config of sessions 1-3 (intensity inputs, pseudo-IR/mono reference, unsupervised): the base of
        # the `--config cpu --set ...` commands in docs/RESULTS.md §1.10
        "cpu-intensity": {"net": "cpu", "steps": 2000, "batch": 4, "crop": 160, "lr": 1e-3, "similarity": "ncc",
                          "smooth": "l2", "lambda_smooth": 10.0, "preset": "custom:tfrac=0.02,elastic=1,alpha=2",
                          "translator": "shipped", "mono_fraction": 0.5, "zero_fraction": 0.0, "target": "reference",
                          "flow_weight": 0.0, "arch": "mrrn", "init": "", "long_side": 0, "checkpoint_every": 100, "log_every": 20},
        "paper": {"net": "paper", "steps": 9000, "batch": 16, "crop": 256, "lr": 1e-3, "similarity": "feature",
                  "smooth": "l2", "lambda_smooth": 10.0, "preset": "umf", "translator": "shipped",
                  "mono_fraction": 0.0, "zero_fraction": 0.0, "target": "reference", "flow_weight": 0.0,
                  "arch": "mrrn", "init": "", "long_side": 0, "checkpoint_every": 500, "log_every": 50},
        "tiny": {"net": "tiny", "steps": 3, "batch": 2, "crop": 32, "lr": 1e-3, "similarity": "ncc",
                 "smooth": "l2", "lambda_smooth": 10.0, "preset": "umf", "translator": "none",
                 "mono_fraction": 0.5, "zero_fraction": 0.0, "target": "reference", "flow_weight": 0.0,
                 "arch": "mrrn", "init": "", "long_side": 0, "checkpoint_every": 1, "log_every": 1},
    },
    # DIFN on aligned training pairs (the ground-truth IR; the official code leaves `ir_reg` unstated),
    # saliency weights from the full aligned images as in data/get_svs_map.py.
    "difn": {
        "cpu": {"net": "cpu", "steps": 2000, "batch": 4, "crop": 128, "lr": 1e-3, "loss": "paper",
                "checkpoint_every": 100, "log_every": 20},
        "paper": {"net": "paper", "steps": 4400, "batch": 8, "crop": 256, "lr": 1e-3, "loss": "official",
                  "checkpoint_every": 500, "log_every": 50},
        "tiny": {"net": "cpu", "steps": 3, "batch": 2, "crop": 32, "lr": 1e-3, "loss": "paper",
                 "checkpoint_every": 1, "log_every": 1},
    },
    # PWF (the default pipeline's fuser): pyramid-weight fusion, unsupervised (losses/pwf.py), aligned training
    # pairs. target: intensity target of the loss, "max" (max(IR, VIS)) or "svs" (DIFN's saliency weights, here
    # computed on each crop).
    "pwf": {
        "cpu": {"net": "cpu", "levels": 0, "steps": 1600, "batch": 8, "crop": 128, "lr": 1e-3, "w_ssim": 1.0,
                "w_grad": 30.0, "w_int": 1.0, "target": "max", "checkpoint_every": 100, "log_every": 20},
        "tiny": {"net": "tiny", "levels": 0, "steps": 3, "batch": 2, "crop": 32, "lr": 1e-3, "w_ssim": 1.0,
                 "w_grad": 10.0, "w_int": 1.0, "target": "max", "checkpoint_every": 1, "log_every": 1},
        # issue 15 item 2 (losses/pwf.py): the shipped loss + w_rmse x (RMS(F - IR) + RMS(F - VIS)) / 2 (Psnr /
        # Rmse) + w_qabf x (1 - differentiable Qabf) + w_sd x SD shortfall + w_qcv x Qcv / 1000 (CSF scaled as for a
        # qcv_ref-px image), the gradient target x grad_gain; fine-tuned from init ("shipped": pwf_cpu; or an
        # export's .safetensors; "": from scratch). "cpu" and "tiny" lack these keys: their terms are off.
        "cpu-edge": {"net": "cpu", "levels": 0, "steps": 600, "batch": 8, "crop": 128, "lr": 5e-4, "w_ssim": 1.0,
                     "w_grad": 30.0, "w_int": 1.0, "target": "max", "w_rmse": 0.0, "w_qabf": 0.0, "grad_gain": 1.0,
                     "w_sd": 0.0, "w_qcv": 0.0, "qcv_ref": 400, "init": "shipped",
                     "checkpoint_every": 100, "log_every": 20},
        "tiny-edge": {"net": "tiny", "levels": 0, "steps": 3, "batch": 2, "crop": 32, "lr": 1e-3, "w_ssim": 1.0,
                      "w_grad": 10.0, "w_int": 1.0, "target": "max", "w_rmse": 1.0, "w_qabf": 1.0, "grad_gain": 1.1,
                      "w_sd": 1.0, "w_qcv": 1.0, "qcv_ref": 64, "init": "",
                      "checkpoint_every": 1, "log_every": 1},
        # issue 15 item 2, round 2: cpu-edge's terms at the pwf_edge balance + the net's global branch
        # (models/pwf.py: a per-image logit offset per band from pooled features and source statistics). A warm start
        # from weights without the branch loads everything else and starts the branch at zero (same output).
        # photometric a > 0: each source of each crop, with probability 1/2, gets a gamma exp(U(-a, a)), so the
        # branch sees more varied image statistics than RoadScene's (0: off, the crops as they are).
        # issue 15 item 2, round 3 (all 0: off, the batch stream and the loss as before):
        # swap p: with probability p a sample's IR and visible crops trade places (every PWFLoss term is symmetric in
        # the two sources, so the target is unchanged; the net must tell the dominant source from the content).
        # degrade p: with probability p one source of the sample, chosen at random, loses contrast around its crop
        # mean m: x' = m' + k (x - m), k ~ U(0.25, 0.7); a visible one also darkens (m' = m U(0.5, 1), night), an IR
        # one washes out (m' = m + (1 - m) U(0, 0.3), a warm scene); + Gaussian noise of std U(0, degrade_noise).
        # w_hot: + w_hot x the hot-target contrast shortfall of the true IR: per crop with a hot mask (IR > mean + 2
        # std, 0.1-20 % of the crop, ring = 15 px around it), max(0, 1 - (F mask - F ring) / (IR mask - IR ring)).
        "cpu-global": {"net": "cpu", "levels": 0, "steps": 600, "batch": 8, "crop": 128, "lr": 5e-4, "w_ssim": 1.0,
                       "w_grad": 30.0, "w_int": 1.0, "target": "max", "w_rmse": 5.0, "w_qabf": 2.0,
                       "grad_gain": 1.15, "w_sd": 5.0, "w_qcv": 0.0, "qcv_ref": 400, "init": "shipped",
                       "global_branch": True, "photometric": 0.0, "swap": 0.0, "degrade": 0.0, "degrade_noise": 0.0,
                       "w_hot": 0.0, "checkpoint_every": 100, "log_every": 20},
        "tiny-global": {"net": "tiny", "levels": 0, "steps": 3, "batch": 2, "crop": 32, "lr": 1e-3, "w_ssim": 1.0,
                        "w_grad": 10.0, "w_int": 1.0, "target": "max", "w_rmse": 1.0, "w_qabf": 1.0,
                        "grad_gain": 1.1, "w_sd": 1.0, "w_qcv": 0.0, "qcv_ref": 64, "init": "",
                        "global_branch": True, "photometric": 0.5, "swap": 0.5, "degrade": 0.5,
                        "degrade_noise": 0.01, "w_hot": 1.0, "checkpoint_every": 1, "log_every": 1},
    },
}


# keys every recipe takes; seed: torch initialisation and the batch stream (TrainLoop), recorded in the export
COMMON_KEYS: dict[str, Any] = {"seed": 0}


def _merged(args: TrainArgs) -> dict[str, Any]:
    table = RECIPES.get(args.model)
    if table is None:
        raise UnknownNameError(f"no training recipe for {args.model!r}; known: {', '.join(RECIPES)}")
    if args.config not in table:
        raise UnknownNameError(f"{args.model}: unknown config {args.config!r}; known: {', '.join(table)}")
    cfg = {**COMMON_KEYS, **table[args.config]}
    unknown = set(args.overrides) - set(cfg)
    if unknown:
        raise UnknownNameError(f"{args.model}: unknown override(s) {sorted(unknown)}; known: {sorted(cfg)}")
    for key, value in args.overrides.items():
        _check_override(args.model, key, cfg[key], value)
    cfg.update(args.overrides)
    return cfg


def _check_override(model: str, key: str, default: Any, value: Any) -> None:
    """A number where the recipe has a number (an int for an int), a bool for a bool: ``--set lr=abc`` is the
    user's error, not a crash inside the optimiser. Strings may become anything (``net`` may be a config dict)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, int if isinstance(default, int) else (int, float)) and not isinstance(value, bool)
    else:
        ok = True
    if not ok:
        raise UserError(f"{model}: {key} expects {type(default).__name__} like {default!r}, got {value!r}")
    if key in POSITIVE_KEYS and not value > 0:
        raise UserError(f"{model}: {key} must be > 0, got {value!r}")
    if key in NON_NEGATIVE_KEYS and not value >= 0:
        raise UserError(f"{model}: {key} must be >= 0, got {value!r}")


# settings a run cannot work without a positive value of (batch 0 or a negative crop crashed inside a step)
POSITIVE_KEYS = ("batch", "crop", "checkpoint_every", "log_every")
NON_NEGATIVE_KEYS = ("steps", "max_shift", "lr")  # lr 0 keeps a warm start as it is


def rfvif_variant(name: str, variant: str = ""):
    """The RFVIF config ``name`` with ``variant`` ("key=value,...") overrides, e.g. "use_dkg=false,num_fab=1"."""
    from dataclasses import replace

    from ..models.rfvif import RFVIFConfig, _resolve_config

    base = _resolve_config(name)
    overrides: dict[str, Any] = {}
    known = {f for f in RFVIFConfig.__dataclass_fields__}
    for item in filter(None, (p.strip() for p in variant.split(","))):
        key, sep, text = item.partition("=")
        if not sep or key not in known:
            raise UserError(f"rfvif variant: expected KEY=VALUE with KEY in {sorted(known)}, got {item!r}")
        current = getattr(base, key)
        if isinstance(current, bool) and text.lower() not in ("true", "false", "1", "0"):
            raise UserError(f"rfvif variant: {key} expects true/false, got {text!r}")
        try:
            overrides[key] = _variant_value(current, text)
        except ValueError:
            raise UserError(f"rfvif variant: {key} expects a value like {current!r}, got {text!r}") from None
    try:
        return replace(base, **overrides)
    except ValueError as exc:  # RFVIFConfig's own checks, e.g. num_res_blocks >= 0
        raise UserError(f"rfvif variant {variant!r}: {exc}") from None


def _variant_value(current: Any, text: str) -> Any:
    """``text`` parsed like ``current``: bool, tuple of ints (1/0/2), float or None, int, str."""
    if isinstance(current, bool):
        return text.lower() in ("true", "1")
    if isinstance(current, tuple):
        return tuple(int(v) for v in text.split("/"))
    if current is None or isinstance(current, float):
        return None if text.lower() == "none" else float(text)
    if isinstance(current, int):
        return int(text)
    return text


def _rfvif(args: TrainArgs, cfg: dict[str, Any]):
    from ..losses.rfvif import RFVIF_OBJECTIVES, RFVIFLoss
    from ..models.rfvif import RFVIF
    from ..models.vgg import build_feature_extractor

    dist = setup_distributed(args.device)
    torch.manual_seed(int(cfg["seed"]))
    net_config = rfvif_variant(cfg["net"], cfg.get("variant", ""))
    net = RFVIF(net_config)
    if cfg.get("objective", "paper") not in RFVIF_OBJECTIVES:
        raise UserError(f"rfvif: objective must be one of {', '.join(RFVIF_OBJECTIVES)}, got {cfg['objective']!r}")
    if cfg.get("init"):
        shipped = {"shipped": "rfvif", "shipped-paper": "rfvif-paper"}
        init = weights_path(shipped[cfg["init"]], None) if cfg["init"] in shipped else Path(cfg["init"])
        state, meta = checkpoints.load_weights(init, architecture="rfvif")
        # an init without the full-resolution IR path or the shift prior may warm-start a net with them: their
        # gates start at zero, and so does the gain with which the shift estimate is applied: the net begins as the
        # init
        grown_modules = {"ir_skip": ("ir_path.",), "shift_prior": ("shift.", "ir_gate."), "pyramid_head": ("pyr_",)}
        init_config = {**{o: False for o in grown_modules}, **meta["config"]}  # older configs lack the keys
        grows = [o for o in grown_modules if getattr(net_config, o) and not init_config[o]]
        if {**init_config, **{o: True for o in grows}} != net_config.to_dict():
            raise UserError(f"rfvif: init {cfg['init']} holds config {meta['config']}, this run builds "
                             f"{net_config.to_dict()}")
        missing, unexpected = net.load_state_dict(state, strict=not grows)
        new_prefixes = tuple(p for o in grows for p in grown_modules[o])
        if unexpected or any(not k.startswith(new_prefixes) for k in missing):
            raise UserError(f"rfvif: init {cfg['init']} does not fit this net (missing {missing}, unexpected "
                             f"{unexpected})")
    net = net.to(dist.device)
    extractor = build_feature_extractor(cfg["features"], layers=("relu2_2",), arch="vgg16",
                                        normalize_imagenet=True).to(dist.device)
    teacher_weight = float(cfg.get("teacher_weight", 0))
    if teacher_weight > 0 and not cfg.get("teacher"):
        raise UserError("rfvif: teacher_weight > 0 needs teacher=PIPELINE (e.g. identity+gff)")
    try:  # the loss checks its weights: a bad --set value is the user's error
        loss_fn = RFVIFLoss(feature_extractor=lambda x: extractor(x)["relu2_2"],
                            grad_weight=float(cfg.get("grad_weight", 0)), teacher_weight=teacher_weight,
                            objective=cfg.get("objective", "paper"),
                            fusion_grad_weight=float(cfg.get("fusion_grad_weight", 30.0)),
                            fusion_int_weight=float(cfg.get("fusion_int_weight", 1.0)),
                            fusion_qabf_weight=float(cfg.get("fusion_qabf_weight", 0.0)),
                            fusion_sd_weight=float(cfg.get("fusion_sd_weight", 0.0)))
    except ValueError as exc:
        raise UserError(f"rfvif: {exc}") from None
    model = torch.nn.parallel.DistributedDataParallel(net) if dist.world_size > 1 else net
    # the shift estimator (RFVIFConfig.shift_prior) is new and small: it learns at shift_lr_scale x the lr
    fresh = [p for n, p in net.named_parameters() if n.startswith("shift.")]
    # the pyramid head (RFVIFConfig.pyramid_head) learns at head_lr (0 or absent: lr)
    head = [p for n, p in net.named_parameters() if n.startswith("pyr_")]
    head_lr = float(cfg.get("head_lr", 0.0)) or cfg["lr"]
    opt = torch.optim.Adam([{"params": [p for n, p in net.named_parameters() if not n.startswith(("shift.", "pyr_"))]},
                            *([{"params": fresh, "lr": cfg["lr"] * float(cfg.get("shift_lr_scale", 1.0))}]
                              if fresh else []),
                            *([{"params": head, "lr": head_lr}] if head else [])], lr=cfg["lr"])
    bank = load_bank(args.data, args.split)
    teacher = teacher_bank(bank, cfg["teacher"], dist.device) if teacher_weight > 0 else None

    def step(rng, step_index: int) -> dict[str, float]:
        if net_config.shift_prior:  # the estimate enters the warp gradually, as it becomes reliable
            net.shift.gain.fill_(min(1.0, step_index / max(float(cfg.get("shift_ramp", 1)), 1.0)))
        b = shifted_crops(bank, rng, cfg["batch"], cfg["crop"], cfg["max_shift"], teacher=teacher)
        vis, ir, gt = b.vis.to(dist.device), b.ir.to(dist.device), b.gt.to(dist.device)
        out = model(ir, vis)
        taught = b.teacher.to(dist.device) if b.teacher is not None else None
        total, terms = loss_fn(out.fused, out.aligned_ir, vis, gt, taught)
        if out.shift is not None:
            # the IR crop was cut at p + shift: it is read back at p - shift (RFVIFConfig.shift_prior)
            shift_error = (out.shift + b.shifts.to(out.shift)).abs().mean()
            total = total + float(cfg.get("shift_weight", 0.0)) * shift_error
            terms.update(shift_px=float(shift_error.detach()), total=float(total.detach()))
        if float(cfg.get("w_hot", 0.0)) > 0:
            from ..losses.pwf import hot_target_shortfall

            hot = hot_target_shortfall(out.fused, gt)
            total = total + float(cfg["w_hot"]) * hot
            terms.update(hot=float(hot.detach()), total=float(total.detach()))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return terms

    loop_cfg = LoopConfig(steps=cfg["steps"], seed=int(cfg["seed"]), checkpoint_every=cfg["checkpoint_every"],
                          log_every=cfg["log_every"], lr_milestones=(1 / 3, 2 / 3))
    run_cfg = {**cfg, "features_description": extractor.description, "data": str(args.data),
               "split": str(args.split)}

    def export(loop: TrainLoop) -> None:
        checkpoints.save_weights(net, args.out / "export", "rfvif", net_config.to_dict(),
                                 training={**run_cfg, "steps_done": loop.step, "wall_s": round(loop.elapsed, 1)})

    return {"net": model}, {"adam": opt}, step, loop_cfg, run_cfg, dist, export


def _cpstn(args: TrainArgs, cfg: dict[str, Any]):
    import torch.nn.functional as F

    from ..losses.mind import mind_distance
    from ..losses.translation import PST_LAYERS, CPSTNGeneratorLoss, PSTLoss, discriminator_loss, nyquist_excess
    from ..models.cpstn import CPSTN_CONFIGS, ImagePool, build_cpstn
    from ..models.vgg import build_feature_extractor
    from .data import paired_crops

    dist = setup_distributed(args.device)
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    nets = build_cpstn(cfg["net"], generator=gen)
    objective = cfg.get("objective", "paper")
    if objective not in CPSTN_OBJECTIVES:
        raise UserError(f"cpstn: objective must be one of {', '.join(CPSTN_OBJECTIVES)}, got {objective!r}")
    for term in ("mind_weight", "nyquist_weight"):
        if cfg.get(term, 0.0) and objective != "supervised":
            raise UserError(f"cpstn: {term} is a term of the supervised objective (--set objective=supervised)")
    if cfg.get("init"):
        nets.g_a.load_state_dict(cpstn_generator_state(Path(cfg["init"])))
    nets = nets.to(dist.device)
    extractor = build_feature_extractor(cfg["features"], layers=PST_LAYERS, arch="vgg19").to(dist.device)
    g_loss = CPSTNGeneratorLoss(PSTLoss(extractor))
    wrap = (lambda m: torch.nn.parallel.DistributedDataParallel(m)) if dist.world_size > 1 else (lambda m: m)
    g_a, g_b, d_a, d_b = wrap(nets.g_a), wrap(nets.g_b), wrap(nets.d_a), wrap(nets.d_b)
    # objective "supervised": G_A alone (G_B and the discriminators stay as built, or as initialised)
    gen_params = [*g_a.parameters()] + ([] if objective == "supervised" else [*g_b.parameters()])
    opt_g = torch.optim.Adam(gen_params, lr=cfg["lr"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam([*d_a.parameters(), *d_b.parameters()], lr=cfg["lr"], betas=(0.5, 0.999))
    pool_a, pool_b = ImagePool(50, gen), ImagePool(50, gen)
    bank = load_bank(args.data, args.split)

    def supervised_step(rng, _step: int) -> dict[str, float]:
        vis, ir = paired_crops(bank, rng, cfg["batch"], cfg["crop"])
        real_a, real_b = vis.to(dist.device) * 2 - 1, ir.to(dist.device) * 2 - 1
        fake_b = g_a(real_a)
        paired, edge = F.l1_loss(fake_b, real_b), g_loss.edge(fake_b, real_b)
        total = cfg["paired_l1"] * paired + cfg.get("edge_weight", 0.0) * edge
        terms = {"paired_l1": float(paired.detach()), "edge": float(edge.detach())}
        if cfg.get("mind_weight", 0.0):
            structure = mind_distance((fake_b + 1) / 2, (real_b + 1) / 2)
            total = total + cfg["mind_weight"] * structure
            terms["mind"] = float(structure.detach())
        if cfg.get("nyquist_weight", 0.0):
            checker = nyquist_excess(fake_b, real_b)
            total = total + cfg["nyquist_weight"] * checker
            terms["nyquist"] = float(checker.detach())
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
        return {**terms, "total": float(total.detach())}

    def step(rng, _step: int) -> dict[str, float]:
        vis, ir = paired_crops(bank, rng, cfg["batch"], cfg["crop"])
        real_a, real_b = vis.to(dist.device) * 2 - 1, ir.to(dist.device) * 2 - 1
        fake_b, fake_a = g_a(real_a), g_b(real_b)
        rec_a, rec_b = g_b(fake_b), g_a(fake_a)
        for d in (d_a, d_b):
            d.requires_grad_(False)
        total, terms = g_loss(real_a, real_b, fake_b, rec_a, fake_a, rec_b, d_a(fake_b), d_b(fake_a))
        if cfg["paired_l1"]:
            paired = F.l1_loss(fake_b, real_b)
            total = total + cfg["paired_l1"] * paired
            terms["paired_l1"] = float(paired.detach())
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
        for d in (d_a, d_b):
            d.requires_grad_(True)
        loss_d = discriminator_loss(d_a, real_b, pool_a.query(fake_b)) + discriminator_loss(d_b, real_a, pool_b.query(fake_a))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        terms["d"] = float(loss_d.detach())
        return terms

    # official schedule: constant, then linear decay to 0 over the second half
    loop_cfg = LoopConfig(steps=cfg["steps"], seed=int(cfg["seed"]), checkpoint_every=cfg["checkpoint_every"],
                          log_every=cfg["log_every"], linear_decay_from=0.5)
    run_cfg = {**cfg, "features_description": extractor.description, "data": str(args.data), "split": str(args.split)}

    def export(loop: TrainLoop) -> None:
        net_cfg = CPSTN_CONFIGS[cfg["net"]] if isinstance(cfg["net"], str) else cfg["net"]
        checkpoints.save_weights(nets.g_a, args.out / "export", "cpstn_g_a",
                                 {**net_cfg, "in_ch": 3, "out_ch": 1},
                                 training={**run_cfg, "steps_done": loop.step, "wall_s": round(loop.elapsed, 1)})

    if objective == "supervised":
        return {"nets": nets}, {"g": opt_g}, supervised_step, loop_cfg, run_cfg, dist, export
    return {"nets": nets}, {"g": opt_g, "d": opt_d}, step, loop_cfg, run_cfg, dist, export


CPSTN_OBJECTIVES = ("paper", "supervised")


def cpstn_generator_state(path: Path) -> dict[str, torch.Tensor]:
    """G_A's state from a CPSTN training checkpoint (``checkpoint.pt``) or export (``.safetensors``)."""
    if not path.is_file():
        raise UserError(f"cpstn: init {path} is not a file (a CPSTN checkpoint.pt or export.safetensors)")
    if path.suffix == ".pt":
        modules = torch.load(path, map_location="cpu", weights_only=False)["modules"]["nets"]
        return {k[len("g_a."):]: v for k, v in modules.items() if k.startswith("g_a.")}
    return checkpoints.load_weights(path, architecture="cpstn_g_a")[0]


def teacher_bank(bank, pipeline_name: str, device: torch.device) -> list:
    """Fusion (Y, (h, w) float32) of every *aligned* training pair by the registered pipeline ``pipeline_name``."""
    from ..api import fuse_arrays, load_pipeline

    pipe = load_pipeline(pipeline_name, device=str(device))
    with torch.no_grad():
        return [fuse_arrays(ir, vis, pipe, warn=False).fused_y.astype("float32") for ir, vis in zip(bank.ir, bank.vis)]


def pseudo_ir_bank(bank, translator_path: str, device: torch.device) -> list:
    """Pseudo-IR for every training image with a trained CPSTN (the official offline stage 2)."""
    from ..models.cpstn import CPSTNTranslator, ResnetGenerator

    state, meta = checkpoints.load_weights(Path(translator_path), architecture="cpstn_g_a")
    c = meta["config"]
    g = ResnetGenerator.from_config(c, c["in_ch"], c["out_ch"])
    g.load_state_dict(state)
    tr = CPSTNTranslator(g).to(device).eval()
    out = []
    with torch.no_grad():
        for vis in bank.vis:
            t = torch.from_numpy(vis).permute(2, 0, 1)[None].to(device)
            out.append(tr(t)[0, 0].cpu().numpy())
    return out


def _translator_path(cfg: dict[str, Any]) -> Path:
    """The CPSTN export named by ``cfg["translator"]``: a path, or "shipped" for the packaged CPSTN."""
    if cfg["translator"] in ("", None):
        raise UserError("mrrn: set translator=PATH of a CPSTN export, translator=shipped (the packaged CPSTN) "
                        "or translator=none (the VIS luminance as the reference)")
    return weights_path("cpstn", None) if cfg["translator"] == "shipped" else Path(cfg["translator"])


def _mrrn(args: TrainArgs, cfg: dict[str, Any]):
    from ..losses.registration import RegistrationLoss
    from ..models.mrrn import MRRN_CONFIGS, UNET_CONFIGS, build_mrrn, build_unet_registrar
    from ..models.vgg import build_feature_extractor
    from ..warp import warp
    from .data import misaligned_crops

    if cfg.get("target", "reference") not in ("reference", "ir_gt"):
        raise UserError(f"mrrn: target must be 'reference' or 'ir_gt', got {cfg['target']!r}")
    dist = setup_distributed(args.device)
    torch.manual_seed(int(cfg["seed"]))
    # arch "unet": the VoxelMorph-style U-Net registrar of the paper's Table 1 comparison, same loss and data
    arch = cfg.get("arch", "mrrn")
    if arch not in ("mrrn", "unet"):
        raise UserError(f"mrrn: arch must be 'mrrn' or 'unet', got {arch!r}")
    tables, build = (MRRN_CONFIGS, build_mrrn) if arch == "mrrn" else (UNET_CONFIGS, build_unet_registrar)
    net = build(cfg["net"])
    if cfg.get("init"):
        # warm start (curriculum): e.g. a mono-modal run's export, then fine-tune on pseudo-IR references
        state, meta = checkpoints.load_weights(Path(cfg["init"]), architecture=arch)
        net.load_state_dict(state)
    net = net.to(dist.device)
    extractor = None
    if cfg["similarity"] == "feature":
        extractor = build_feature_extractor("auto", layers=("relu4_1",), arch="vgg19").to(dist.device)
    loss_fn = RegistrationLoss(extractor, lambda_smooth=cfg["lambda_smooth"], smooth=cfg["smooth"],
                               similarity=cfg["similarity"])
    model = torch.nn.parallel.DistributedDataParallel(net) if dist.world_size > 1 else net
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    bank = load_bank(args.data, args.split)
    if int(cfg.get("long_side", 0)) > 0:
        bank = resize_bank(bank, int(cfg["long_side"]))
    reference = None if cfg["translator"] == "none" else pseudo_ir_bank(bank, _translator_path(cfg), dist.device)

    def step(rng, _step: int) -> dict[str, float]:
        b = misaligned_crops(bank, rng, cfg["batch"], cfg["crop"], cfg["preset"], reference, cfg["mono_fraction"],
                             float(cfg.get("zero_fraction", 0.0)))
        fixed, moving = b["fixed"].to(dist.device), b["moving"].to(dist.device)
        out = model(fixed, moving)
        if cfg.get("target", "reference") == "ir_gt":
            # synthesis-supervised similarity: compare with the aligned IR the distortion was made from
            ir_gt = b["ir_gt"].to(dist.device)
            total, terms = loss_fn(ir_gt, moving, {**out, "fixed_warped_back": warp(ir_gt, -out["field"])})
        else:
            total, terms = loss_fn(fixed, moving, out)
        field_gt = b["field_gt"].to(dist.device)
        epe = (out["field"] - field_gt).pow(2).sum(1).add(1e-6).sqrt().mean()
        flow_weight = float(cfg.get("flow_weight", 0.0))
        if flow_weight > 0:
            total = total + flow_weight * epe
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        terms["epe"] = float(epe.detach())
        terms["total"] = float(total.detach())
        return terms

    loop_cfg = LoopConfig(steps=cfg["steps"], seed=int(cfg["seed"]), checkpoint_every=cfg["checkpoint_every"],
                          log_every=cfg["log_every"])
    run_cfg = {**cfg, "features_description": getattr(extractor, "description", "none (pixel similarity)"),
               "data": str(args.data), "split": str(args.split)}

    def export(loop: TrainLoop) -> None:
        net_cfg = tables[cfg["net"]] if isinstance(cfg["net"], str) else cfg["net"]
        checkpoints.save_weights(net, args.out / "export", arch, {k: list(v) if isinstance(v, tuple) else v for k, v in net_cfg.items()},
                                 training={**run_cfg, "steps_done": loop.step, "wall_s": round(loop.elapsed, 1)})

    return {"net": model}, {"adam": opt}, step, loop_cfg, run_cfg, dist, export


def _fuser_parts(args: TrainArgs, cfg: dict[str, Any], architecture: str, net: torch.nn.Module,
                 model: torch.nn.Module, opt: torch.optim.Optimizer, step: Callable, dist):
    """The loop config, run record and export of a one-network fuser recipe trained on aligned pairs (DIFN, PWF)."""
    loop_cfg = LoopConfig(steps=cfg["steps"], seed=int(cfg["seed"]), checkpoint_every=cfg["checkpoint_every"],
                          log_every=cfg["log_every"])
    run_cfg = {**cfg, "data": str(args.data), "split": str(args.split), "training_ir": "ground-truth aligned IR"}

    def export(loop: TrainLoop) -> None:
        checkpoints.save_weights(net, args.out / "export", architecture, dict(net.config),
                                 training={**run_cfg, "steps_done": loop.step, "wall_s": round(loop.elapsed, 1)})

    return {"net": model}, {"adam": opt}, step, loop_cfg, run_cfg, dist, export


def _difn(args: TrainArgs, cfg: dict[str, Any]):
    import numpy as np

    from ..losses.fusion import FusionLoss, svs_weights
    from ..models.difn import build_difn

    dist = setup_distributed(args.device)
    torch.manual_seed(int(cfg["seed"]))
    net = build_difn(cfg["net"]).to(dist.device)
    loss_fn = FusionLoss(cfg["loss"])
    model = torch.nn.parallel.DistributedDataParallel(net) if dist.world_size > 1 else net
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    bank = load_bank(args.data, args.split)
    weights = []  # saliency weights of the full aligned images (official: offline, from raw ir/vi)
    for ir, vy in zip(bank.ir, bank.vis_y):
        w_ir, w_vi = svs_weights(torch.from_numpy(ir)[None, None], torch.from_numpy(vy)[None, None])
        weights.append((w_ir[0, 0].numpy(), w_vi[0, 0].numpy()))

    def step(rng, _step: int) -> dict[str, float]:
        crops = []
        for _ in range(cfg["batch"]):
            i = pick_image(bank, rng, cfg["crop"])
            h, w = bank.ir[i].shape
            y, x = int(rng.integers(h - cfg["crop"] + 1)), int(rng.integers(w - cfg["crop"] + 1))
            sl = (slice(y, y + cfg["crop"]), slice(x, x + cfg["crop"]))
            flip = rng.random() < 0.5
            parts = [bank.ir[i][sl], bank.vis_y[i][sl], weights[i][0][sl], weights[i][1][sl]]
            crops.append([np.ascontiguousarray(p[:, ::-1] if flip else p) for p in parts])
        ir, vis, w_ir, w_vi = (torch.from_numpy(np.stack([c[k] for c in crops]))[:, None].to(dist.device)
                               for k in range(4))
        fused = model(ir, vis)
        total, terms = loss_fn(fused, ir, vis, w_ir, w_vi)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return terms

    return _fuser_parts(args, cfg, "difn", net, model, opt, step, dist)


def _pwf(args: TrainArgs, cfg: dict[str, Any]):
    import numpy as np

    from ..losses.pwf import PWFLoss, hot_target_shortfall
    from ..models.pwf import PWF_CONFIGS, build_pwf

    if cfg["net"] not in PWF_CONFIGS:
        raise UnknownNameError(f"pwf: unknown net {cfg['net']!r}; known: {', '.join(PWF_CONFIGS)}")
    dist = setup_distributed(args.device)
    torch.manual_seed(int(cfg["seed"]))
    # levels 0: the net's
    arch = {**PWF_CONFIGS[cfg["net"]], **({"levels": cfg["levels"]} if cfg["levels"] > 0 else {})}
    if cfg.get("global_branch", False):
        arch["global_branch"] = True
    net = build_pwf(arch)
    if cfg.get("init"):
        init = weights_path("pwf", None) if cfg["init"] == "shipped" else Path(cfg["init"])
        state, meta = checkpoints.load_weights(init, architecture="pwf")
        have = {k: list(v) if isinstance(v, tuple) else v for k, v in net.config.items()}
        # weights without the global branch may seed a net with it: every other tensor must match, the branch starts
        # at zero (models/pwf.py), so the run starts from the init's output
        seed_branch = have.get("global_branch", False) and not meta["config"].get("global_branch", False)
        if {k: v for k, v in have.items() if not (seed_branch and k == "global_branch")} != meta["config"]:
            raise UserError(f"pwf: init {init} has config {meta['config']}, the run builds {net.config}")
        missing, unexpected = net.load_state_dict(state, strict=not seed_branch)
        if unexpected or any(not k.startswith("glob.") for k in missing):
            raise UserError(f"pwf: init {init} does not fit the net: missing {missing}, unexpected {unexpected}")
    net = net.to(dist.device)
    loss_fn = PWFLoss(w_ssim=cfg["w_ssim"], w_grad=cfg["w_grad"], w_int=cfg["w_int"], target=cfg["target"],
                      w_rmse=cfg.get("w_rmse", 0.0), w_qabf=cfg.get("w_qabf", 0.0),
                      grad_gain=cfg.get("grad_gain", 1.0), w_sd=cfg.get("w_sd", 0.0), w_qcv=cfg.get("w_qcv", 0.0),
                      qcv_ref=cfg.get("qcv_ref", 0))
    model = torch.nn.parallel.DistributedDataParallel(net) if dist.world_size > 1 else net
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    bank = load_bank(args.data, args.split)

    def step(rng, _step: int) -> dict[str, float]:
        vis, ir = (t.to(dist.device) for t in paired_crops(bank, rng, cfg["batch"], cfg["crop"], colour=False))
        if cfg.get("photometric", 0.0) > 0:
            a, n = float(cfg["photometric"]), vis.shape[0]
            gammas = np.where(rng.random((2, n)) < 0.5, 1.0, np.exp(rng.uniform(-a, a, (2, n))))
            gammas = torch.as_tensor(gammas, dtype=vis.dtype, device=vis.device).view(2, n, 1, 1, 1)
            vis, ir = vis.clamp(0.0, 1.0).pow(gammas[0]), ir.clamp(0.0, 1.0).pow(gammas[1])
        if cfg.get("degrade", 0.0) > 0:
            vis, ir = degrade_sources(vis, ir, rng, float(cfg["degrade"]), float(cfg.get("degrade_noise", 0.0)))
        true_ir = ir  # the hot-target term follows the real IR wherever the swap puts it
        if cfg.get("swap", 0.0) > 0:
            vis, ir = swap_sources(vis, ir, rng, float(cfg["swap"]))
        fused = model(ir, vis).fused
        total, terms = loss_fn(fused, ir, vis)
        if cfg.get("w_hot", 0.0) > 0:
            hot = hot_target_shortfall(fused, true_ir)
            total = total + float(cfg["w_hot"]) * hot
            terms = {**terms, "hot": float(hot.detach())}
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return terms

    return _fuser_parts(args, cfg, "pwf", net, model, opt, step, dist)


_BUILDERS: dict[str, Callable] = {"rfvif": _rfvif, "cpstn": _cpstn, "mrrn": _mrrn, "difn": _difn, "pwf": _pwf}


def run_recipe(args: TrainArgs) -> dict[str, float]:
    """Train (or resume) ``args.model`` with configuration ``args.config``; export weights at the end."""
    cfg = _merged(args)
    modules, optimizers, step_fn, loop_cfg, run_cfg, dist, export = _BUILDERS[args.model](args, cfg)
    loop = TrainLoop(args.out, modules, optimizers, step_fn, loop_cfg, run_cfg, dist, progress=args.progress)
    last = loop.run(resume=args.resume)
    if dist.is_main:
        export(loop)
    return last
