"""Registered network pipelines (UMF-CMGR, RFVIF), built from shipped safetensors weights.

Each factory reads ``alignfuse/weights/NAME.safetensors`` and its JSON sidecar (constructor
config + training record); ``weights_dir`` overrides the folder (e.g. a training run's exports).
A pipeline whose weights are not shipped raises :class:`~alignfuse.checkpoints.WeightsError`
naming the missing file.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoints
from .errors import UserError
from .learned_stages import WEIGHT_NAMES, NetFuser, load_difn, weights_available
from .learned_stages import weights_path as _path
from .pipeline import Pipeline
from .registry import register_pipeline
from .stages import IdentityRegistrar, IdentityTranslator

REGISTER_LONG_SIDE = 384  # UMF registration working resolution (long side, px)
# The default registration's working size (long side, px): its searches, judges and MRRN work at <= 384 px, so a
# larger input only made its full-resolution warps slower (a 4000x3000 visible frame: 7.51 -> 2.02 s to register on
# 2 threads, the same TRE on three real rig pairs; docs/RESULTS.md §4.1). Every benchmark image is smaller.
DEFAULT_REGISTER_LONG_SIDE = 1024
# A global alignment kept with a MIND gain below this is flagged suspect: every right solution on 60
# ``roadscene_raw`` training pairs gained >= 0.09, and >= 0.098 on 40 RoadScene training pairs of ``large``.
GLOBAL_WARN_GAIN = 0.08
GLOBAL_MARGIN = 0.0  # mrrn+*: keep the global start only if it ends with a higher MIND similarity


def _desc(text: str, *nets: str) -> str:
    missing = [WEIGHT_NAMES[n] for n in nets if not weights_available(n)]
    return text + (f" [weights not shipped: {', '.join(missing)}]" if missing else "")


def load_cpstn(weights_dir: str | Path | None = None) -> nn.Module:
    from .models.cpstn import CPSTNTranslator, ResnetGenerator

    state, meta = checkpoints.load_weights(_path("cpstn", weights_dir), architecture="cpstn_g_a")
    c = meta["config"]
    g = ResnetGenerator.from_config(c, c["in_ch"], c["out_ch"])
    g.load_state_dict(state)
    return CPSTNTranslator(g).eval().to(memory_format=torch.channels_last)  # faster convs, as in NetFuser


def load_mrrn(weights_dir: str | Path | None = None) -> nn.Module:
    """The registration network: an MRRN, or the U-Net registrar when the sidecar says ``unet``."""
    from .models.mrrn import MRRN, UNetRegistrar

    state, meta = checkpoints.load_weights(_path("mrrn", weights_dir))
    arch = meta.get("architecture")
    if arch not in ("mrrn", "unet"):
        raise checkpoints.WeightsError(f"{_path('mrrn', weights_dir)}: holds a {arch!r} model, expected 'mrrn' or 'unet'")
    cls = MRRN if arch == "mrrn" else UNetRegistrar
    net = cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()})
    net.load_state_dict(state)
    return net.eval().to(memory_format=torch.channels_last)  # ~20 % faster convs and correlation on CPU


def load_rfvif(weights_dir: str | Path | None = None, net: str = "rfvif") -> nn.Module:
    """The RFVIF fuser: ``net`` "rfvif" (the shipped weights) or "rfvif-paper" (trained with the paper's loss)."""
    from .models.rfvif import RFVIF, RFVIFConfig

    state, meta = checkpoints.load_weights(_path(net, weights_dir), architecture="rfvif")
    net = RFVIF(RFVIFConfig.from_dict(meta["config"]))
    net.load_state_dict(state)
    return net.eval()


def _umf_registrar(global_stage: str | None, weights_dir: str | Path | None, criterion: str = "ncc",
                   global_margin: float | None = None, global_reference: str = "reference",
                   global_min_shift: float | None = None):
    """criterion 'ncc' for a pseudo-IR reference; 'mind' when the reference is the visible luminance."""
    from .registration import DeformableRegistrar

    return DeformableRegistrar(load_mrrn(weights_dir), global_stage=global_stage, criterion=criterion,
                               global_margin=global_margin, global_reference=global_reference,
                               global_min_shift=global_min_shift)


@register_pipeline("umf-cmgr", _desc("UMF-CMGR: CPSTN pseudo-IR + global phase correlation (on the visible image) + "
                                      "MRRN registration (on the pseudo-IR) + DIFN fusion",
                                      "cpstn", "mrrn", "difn"))
def umf_cmgr(weights_dir: str | Path | None = None, global_stage: str | None = "phase",
             register_long_side: int | None = REGISTER_LONG_SIDE, global_reference: str = "visible") -> Pipeline:
    return Pipeline(load_cpstn(weights_dir), _umf_registrar(global_stage, weights_dir,
                                                            global_reference=global_reference),
                    NetFuser(load_difn(weights_dir)), register_long_side=register_long_side, name="umf-cmgr")


@register_pipeline("umf-cmgr-noreg", _desc("UMF-CMGR ablation: DIFN on the unregistered input", "difn"))
def umf_cmgr_noreg(weights_dir: str | Path | None = None) -> Pipeline:
    return Pipeline(IdentityTranslator(), IdentityRegistrar(), NetFuser(load_difn(weights_dir)),
                    name="umf-cmgr-noreg")


@register_pipeline("umf-reg+gff", _desc("CPSTN + global phase correlation (on the visible image) + MRRN registration, "
                                         "guided-filter fusion",
                                         "cpstn", "mrrn"))
def umf_reg_gff(weights_dir: str | Path | None = None, global_stage: str | None = "phase",
                register_long_side: int | None = REGISTER_LONG_SIDE, global_reference: str = "visible") -> Pipeline:
    from .baselines import FUSERS

    return Pipeline(load_cpstn(weights_dir), _umf_registrar(global_stage, weights_dir, global_reference=global_reference),
                    FUSERS["gff"](),
                    register_long_side=register_long_side, name="umf-reg+gff")


@register_pipeline("rfvif", _desc("RFVIF: registration-free fusion (alignment inside the fuser: the paper's dynamic "
                                   "feature alignment after a global shift prior, our extension); weights trained "
                                   "with the fusion objective (MODEL_CARD)", "rfvif"))
def rfvif(weights_dir: str | Path | None = None) -> Pipeline:
    return Pipeline(IdentityTranslator(), IdentityRegistrar(), NetFuser(load_rfvif(weights_dir), output="fused"),
                    name="rfvif", aligns_in_fuser=True)


@register_pipeline("rfvif-paper", _desc("RFVIF without the shift prior, trained with the paper's loss (Eq. 18): the "
                                         "reference the shipped weights are measured against", "rfvif-paper"))
def rfvif_paper(weights_dir: str | Path | None = None) -> Pipeline:
    return Pipeline(IdentityTranslator(), IdentityRegistrar(),
                    NetFuser(load_rfvif(weights_dir, "rfvif-paper"), output="fused"), name="rfvif-paper",
                    aligns_in_fuser=True)


@register_pipeline("umf-mrrn+gff", _desc("CPSTN + MRRN only (the paper's registration, no global stage), GFF fusion",
                                          "cpstn", "mrrn"))
def umf_mrrn_gff(weights_dir: str | Path | None = None,
                 register_long_side: int | None = REGISTER_LONG_SIDE) -> Pipeline:
    pipe = umf_reg_gff(weights_dir, global_stage=None, register_long_side=register_long_side)
    pipe.name = "umf-mrrn+gff"
    return pipe


@register_pipeline("umf-nocpstn+gff", _desc("MRRN registration on the visible luminance (no CPSTN; the shipped MRRN "
                                             "reads MIND descriptors), guided-filter fusion", "mrrn"))
def umf_nocpstn_gff(weights_dir: str | Path | None = None,
                    register_long_side: int | None = REGISTER_LONG_SIDE) -> Pipeline:
    from .baselines import FUSERS

    return _vis_reference_pipeline(FUSERS["gff"](), "umf-nocpstn+gff", weights_dir, None, register_long_side)


@register_pipeline("umf-nocpstn+difn", _desc("UMF-CMGR without CPSTN (Table 4 'MRRN + DIFN'): MRRN registration on "
                                              "the visible luminance (MIND descriptors), DIFN fusion", "mrrn", "difn"))
def umf_nocpstn_difn(weights_dir: str | Path | None = None, register_long_side: int | None = REGISTER_LONG_SIDE,
                     global_stage: str | None = None, global_min_shift: float | None = None) -> Pipeline:
    return _vis_reference_pipeline(NetFuser(load_difn(weights_dir)), "umf-nocpstn+difn", weights_dir, global_stage,
                                   register_long_side, global_min_shift)


def _vis_reference_pipeline(fuser: nn.Module, name: str, weights_dir: str | Path | None, global_stage: str | None,
                            register_long_side: int | None, global_min_shift: float | None = None) -> Pipeline:
    """No translator: the registrar compares the IR with the visible luminance (fallback judged by MIND).

    With a global stage the network also runs from the identity and the start with the better final MIND
    similarity wins (margin 0, chosen on 40 RoadScene *training* pairs per preset, docs/RESULTS.md §1.7); with
    ``global_min_shift`` instead, the global field is kept only when it is that large, with one network pass."""
    margin = GLOBAL_MARGIN if global_stage is not None and global_min_shift is None else None
    registrar = _umf_registrar(global_stage, weights_dir, "mind", margin, global_min_shift=global_min_shift)
    if getattr(registrar.net, "inputs", "image") != "mind":
        warnings.warn(f"{name}: the registration network reads image intensities, not MIND descriptors; against the "
                      "visible luminance such networks did not learn here (docs/RESULTS.md §1.10)", stacklevel=3)
    return Pipeline(IdentityTranslator(), registrar, fuser, register_long_side=register_long_side, name=name)


@register_pipeline("mrrn+difn", _desc("MIND global stage + MRRN on the visible luminance (no CPSTN; needs an MRRN "
                                      "with MIND inputs, e.g. the shipped one), DIFN fusion", "mrrn", "difn"))
def mrrn_difn(weights_dir: str | Path | None = None, global_stage: str | None = "mind",
              register_long_side: int | None = REGISTER_LONG_SIDE) -> Pipeline:
    return _vis_reference_pipeline(NetFuser(load_difn(weights_dir)), "mrrn+difn", weights_dir, global_stage,
                                   register_long_side)


@register_pipeline("mrrn+gff", _desc("MIND global stage + MRRN on the visible luminance (no CPSTN), guided-filter "
                                     "fusion", "mrrn"))
def mrrn_gff(weights_dir: str | Path | None = None, global_stage: str | None = "mind",
             register_long_side: int | None = REGISTER_LONG_SIDE) -> Pipeline:
    from .baselines import FUSERS

    return _vis_reference_pipeline(FUSERS["gff"](), "mrrn+gff", weights_dir, global_stage, register_long_side)


def rig_registrar(weights_dir: str | Path | None = None, local: bool = True, local_min_gain: float = 0.035,
                  local_alone_min_gain: float = 0.02,
                  global_min_gain: float = 0.02, global_min_shift: float = 0.015, dead_zone: float = 0.0035,
                  local_max_inverse: float = 0.7, local_min_affine: float = 0.0, rig: str | Path | None = None,
                  ir_field: str = "wider"):
    """The default registration: the cross-modal global search (real rigs: offset, field of view, roll,
    perspective) then, for what a global model cannot express (parallax, lens differences, elastic residuals),
    the shipped MRRN on the visible luminance at 384 px; each kept only when it lowers the MIND distance by its
    ``min_gain`` (relative), so aligned pairs stay at the identity (``registration/chain.py``).

    ``rig``: a rig file written by ``alignfuse calibrate`` (or a :class:`~alignfuse.registration.RigModel`): its
    homography replaces the per-frame global search and is always applied (no gate, no dead zone); the local
    stage still runs unless ``local=False``.

    ``ir_field``: what the IR sees relative to the visible camera, which sets the scales the global search tries
    (:data:`~alignfuse.registration.global_search.IR_FIELDS`): ``"wider"`` (default; RoadScene's rig, most vehicle
    rigs; an IR of another size for which it keeps nothing is searched as ``"narrower"`` too) or ``"narrower"``
    alone (a narrow thermal lens beside a wide visible one: the IR sees 38-110 % of the visible width, and the search
    accepts a solution that covers only part of the visible frame).

    All thresholds were chosen on *training* pairs (RoadScene ``train.txt``, ``roadscene_raw`` train names):

    * local_min_gain 0.035 after a kept global (or rig) correction: there a homography is usually the whole truth of
      a real rig, and the MRRN's 1-4 % gains add error (``roadscene_raw`` training pairs 2.56 vs 2.60 raw px at
      0.02; synthetic ``large`` pairs, whose elastic residual it removes, prefer 0.02: 2.92 vs 3.05 px);
    * local_alone_min_gain 0.02 and local_max_inverse 0.7: the MRRN's MIND gain does not tell an aligned pair from a
      slightly misaligned one (1-10 % on aligned RoadScene training pairs, 4-16 % on ``umf`` ones); inverse
      consistency does: on a pair no global correction was needed for, its field is kept only when the MRRN run on
      the swapped pair undoes >= 30 % of it (:func:`~alignfuse.registration.chain.inverse_residual` <= 0.7; aligned
      pairs mostly 0.87-1.02, ``umf`` 0.30-0.62). On 40 training pairs per preset (``benchmarks/local_gate.py``):
      aligned 1.30 -> 0.27 px (0.23 px with the dead zone), ``umf`` 2.65 -> 2.65 px (2.66), against 0.00 / 2.78
      px for a coherence gate (``local_min_affine`` 0.5, available);
    * global_min_shift 0.015 (of the long side): a global correction smaller than that is left to the MRRN,
      which was trained on the hand-aligned RoadScene ground truth, while the MIND optimum of the global stage
      sits 1-2 px from it (``umf`` train EPE 2.93 -> 2.82 px);
    * dead_zone: see :class:`~alignfuse.registration.ChainRegistrar`."""
    from .registration import ChainRegistrar, GlobalSearchRegistrar, RigRegistrar, Stage

    if rig is not None:
        if ir_field != "wider":
            raise UserError("--ir-field sets the global search, which a rig file replaces; give it to "
                            "`alignfuse calibrate` instead")
        stages = [Stage("rig", RigRegistrar(rig), None, -math.inf, 0.0)]
        dead_zone = 0.0
    else:
        stages = [Stage("global", GlobalSearchRegistrar(min_gain=global_min_gain, ir_field=ir_field), None,
                        global_min_gain,
                        global_min_shift if local else 0.0, warn_below=GLOBAL_WARN_GAIN)]
    if local:
        stages.append(Stage("local", _umf_registrar(None, weights_dir, "mind"), REGISTER_LONG_SIDE, local_min_gain,
                            min_affine=local_min_affine, max_inverse=local_max_inverse,
                            alone_min_gain=local_alone_min_gain))
    first = "rig" if rig is not None else "global"
    return ChainRegistrar(stages, dead_zone=dead_zone, name=f"{first}+mrrn" if local else first)


def _default_long_side(registration: dict[str, Any]) -> int | None:
    """The default registration's working size; none with a rig file (calibrated for the frames' own size)."""
    return None if registration.get("rig") is not None else DEFAULT_REGISTER_LONG_SIDE


@register_pipeline("default", _desc("what `alignfuse fuse` uses: cross-modal global search (translation, field of "
                                    "view, anisotropic scale, roll, perspective) + MRRN local stage, each kept only "
                                    "when it helps; DIFN fusion", "mrrn", "difn"))
def default(weights_dir: str | Path | None = None, local: bool = True, **registration: Any) -> Pipeline:
    return Pipeline(IdentityTranslator(), rig_registrar(weights_dir, local, **registration),
                    NetFuser(load_difn(weights_dir)), register_long_side=_default_long_side(registration),
                    name="default")


@register_pipeline("default+gff", _desc("the default registration, guided-filter fusion", "mrrn"))
def default_gff(weights_dir: str | Path | None = None, local: bool = True, **registration: Any) -> Pipeline:
    from .baselines import FUSERS

    return Pipeline(IdentityTranslator(), rig_registrar(weights_dir, local, **registration), FUSERS["gff"](),
                    register_long_side=_default_long_side(registration), name="default+gff")


@register_pipeline("default+pwf", _desc("the default registration, PWF fusion (pyramid-weight network trained here: "
                                        "sharper and more contrast than DIFN)", "mrrn", "pwf"))
def default_pwf(weights_dir: str | Path | None = None, local: bool = True, **registration: Any) -> Pipeline:
    from .learned_stages import load_pwf

    return Pipeline(IdentityTranslator(), rig_registrar(weights_dir, local, **registration),
                    NetFuser(load_pwf(weights_dir), output="fused"), register_long_side=_default_long_side(registration),
                    name="default+pwf")
