"""Frozen feature extractors for perceptual losses: ImageNet VGG, or an offline substitute.

UMF-CMGR uses VGG19 ImageNet features twice (CPSTN's PST loss: relu1_1..relu5_1; MRRN's
registration loss: relu4_1) and RFVIF uses VGG16. The weights come from torchvision's hub
download, which is unreachable offline, so this module:

* rebuilds torchvision's ``vgg16``/``vgg19`` ``features`` Sequential **without torchvision**, with
  the same indices, so a torchvision state dict (``features.N.weight``/``bias``) loads as is
  (classifier keys are ignored);
* finds weights only in an explicit file or in the torch hub cache; it never downloads;
* offers :class:`GradientPyramidFeatures`, a fixed (weight-free) intensity + Sobel + Laplacian
  pyramid with the same call interface and the same layer names/strides, as the documented
  substitute when no VGG weights exist (spec pitfall 1);
* :func:`build_feature_extractor` picks one and records which in ``.description`` (model cards).

Every extractor maps ``x (B, 1|3, H, W)`` to ``{layer_name: (B, C_l, H_l, W_l)}`` in the order of
``layers``; 1-channel inputs are repeated to 3 channels (VGG) as the official code does. They are
frozen (``requires_grad=False``, always in eval mode) but differentiable w.r.t. their input.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from alignfuse.errors import UserError

__all__ = [
    "VGG_HUB_FILES",
    "VGGFeatures",
    "GradientPyramidFeatures",
    "load_vgg_state_dict",
    "vgg_hub_candidates",
    "build_feature_extractor",
    "layer_stride",
]

log = logging.getLogger(__name__)

# torchvision's released ImageNet weights (file names of torch.hub's cache).
VGG_HUB_FILES: dict[str, str] = {"vgg16": "vgg16-397923af.pth", "vgg19": "vgg19-dcbb9e9d.pth"}

# Convolutions per block for torchvision cfg "D" (vgg16) and "E" (vgg19); block widths.
_BLOCK_CONVS: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
_BLOCK_WIDTHS = (64, 128, 256, 512, 512)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _layout(arch: str) -> list[tuple[str, int, int]]:
    """torchvision ``features`` layout: one ``(name, in_ch, out_ch)`` per index.

    Names are ``conv{b}_{i}``, ``relu{b}_{i}`` (in/out = channels) and ``pool{b}``; the list index
    is the torchvision ``features`` index (e.g. vgg19: 1 = relu1_1, 20 = relu4_1, 29 = relu5_1).
    """
    if arch not in _BLOCK_CONVS:
        raise ValueError(f"arch must be one of {tuple(_BLOCK_CONVS)}, got {arch!r}")
    out: list[tuple[str, int, int]] = []
    cin = 3
    for b, (n, width) in enumerate(zip(_BLOCK_CONVS[arch], _BLOCK_WIDTHS), start=1):
        for i in range(1, n + 1):
            out.append((f"conv{b}_{i}", cin, width))
            out.append((f"relu{b}_{i}", width, width))
            cin = width
        out.append((f"pool{b}", cin, cin))
    return out


def layer_stride(name: str) -> int:
    """Down-sampling factor of a layer name: ``relu4_1`` -> 8, ``pool2`` -> 4, ``scale3`` -> 8."""
    m = re.fullmatch(r"(?:conv|relu)(\d)_(\d)", name)
    if m:
        return 2 ** (int(m.group(1)) - 1)
    m = re.fullmatch(r"pool(\d)", name)
    if m:
        return 2 ** int(m.group(1))
    m = re.fullmatch(r"scale(\d+)", name)
    if m:
        return 2 ** int(m.group(1))
    raise ValueError(f"unknown feature layer name {name!r} (expected e.g. 'relu4_1', 'pool3' or 'scale2')")


def _expected_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """``features.N.weight/bias`` -> shape for the full torchvision layout of ``arch``."""
    shapes: dict[str, tuple[int, ...]] = {}
    for idx, (name, cin, cout) in enumerate(_layout(arch)):
        if name.startswith("conv"):
            shapes[f"features.{idx}.weight"] = (cout, cin, 3, 3)
            shapes[f"features.{idx}.bias"] = (cout,)
    return shapes


def _check_vgg_state_dict(state: Mapping[str, torch.Tensor], arch: str, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` unless ``state`` holds torchvision ``arch`` features."""
    expected = _expected_shapes(arch)
    feats = {k: v for k, v in state.items() if k.startswith("features.")}
    missing = sorted((k for k in expected if k not in feats), key=_key_order)
    unknown = sorted((k for k in feats if k not in expected), key=_key_order)
    wrong = [
        f"{k}: {tuple(v.shape)} != {expected[k]}"
        for k, v in feats.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    if missing or unknown or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[:3]})")
        if unknown:
            parts.append(f"unexpected keys (e.g. {unknown[:3]})")
        if wrong:
            parts.append(f"wrong shapes (e.g. {wrong[:3]})")
        raise UserError(
            f"{source} is not a torchvision {arch} state dict (keys 'features.N.weight/bias'): " + "; ".join(parts)
        )


def _key_order(key: str) -> tuple[int, str]:
    m = re.match(r"features\.(\d+)\.", key)
    return (int(m.group(1)) if m else 10**6, key)


def vgg_hub_candidates(arch: str) -> list[Path]:
    """Files where a cached torchvision ``arch`` checkpoint may sit, in search order.

    ``$TORCH_HOME/hub/checkpoints`` (torch's own rule: ``$TORCH_HOME``, else
    ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``), then ``~/.cache/torch/hub/checkpoints``;
    for each, the torchvision ``.pth`` name and the same stem with ``.safetensors``.
    """
    if arch not in VGG_HUB_FILES:
        raise ValueError(f"arch must be one of {tuple(VGG_HUB_FILES)}, got {arch!r}")
    dirs = [Path(torch.hub.get_dir()) / "checkpoints", Path("~/.cache/torch/hub/checkpoints").expanduser()]
    name = VGG_HUB_FILES[arch]
    out: list[Path] = []
    for d in dirs:
        for f in (d / name, d / (Path(name).stem + ".safetensors")):
            if f not in out:
                out.append(f)
    return out


def _read_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    obj = torch.load(str(path), map_location="cpu", weights_only=True)  # no pickled code
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise UserError(f"{path} does not contain a state dict (got {type(obj).__name__})")
    return dict(obj)


def load_vgg_state_dict(arch: str = "vgg19", path: str | os.PathLike[str] | None = None) -> dict[str, torch.Tensor]:
    """Load torchvision ImageNet VGG weights from disk. Never downloads.

    Args:
        arch: ``"vgg16"`` or ``"vgg19"``.
        path: explicit ``.pth`` (read with ``torch.load(weights_only=True)``) or ``.safetensors``
            file. ``None`` searches the torch hub cache (:func:`vgg_hub_candidates`).

    Returns:
        The state dict (``features.*`` and, if present, ``classifier.*`` keys), validated against
        the torchvision layout of ``arch``.

    Raises:
        FileNotFoundError: no file; the message lists every path tried.
        ValueError: the file is not a torchvision ``arch`` state dict (message names the file).
    """
    if path is not None:
        tried = [Path(path).expanduser()]
    else:
        tried = vgg_hub_candidates(arch)
    for f in tried:
        if f.is_file():
            state = _read_state_file(f)
            _check_vgg_state_dict(state, arch, str(f))
            return state
    raise FileNotFoundError(
        f"no {arch} ImageNet weights found (alignfuse never downloads). Tried: "
        + ", ".join(str(f) for f in tried)
        + f". Put torchvision's {VGG_HUB_FILES[arch]} in $TORCH_HOME/hub/checkpoints or pass weights=PATH."
    )


class _FrozenExtractor(nn.Module):
    """Common behaviour: frozen parameters, permanently in eval mode, dict output."""

    layers: tuple[str, ...]
    channels: dict[str, int]
    strides: dict[str, int]
    description: str

    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "_FrozenExtractor":  # noqa: ARG002 - always eval
        """Stays in eval mode whatever ``mode`` is (the features are fixed)."""
        return super().train(False)


class VGGFeatures(_FrozenExtractor):
    """torchvision-compatible VGG ``features`` truncated at the deepest requested layer.

    Args:
        arch: ``"vgg16"`` or ``"vgg19"``.
        layers: layer names to return, e.g. ``("relu4_1",)`` or
            ``("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")``.
        normalize_imagenet: subtract ImageNet mean / divide by std (expects [0, 1] input). The
            UMF-CMGR code does **not** normalise (PST gets [-1, 1], MRRN gets [0, 1]); RFVIF does.
        weights: ``None`` (random init, labelled as such in ``description``), a path, or a state
            dict in torchvision format.

    Shape:
        x: (B, 1 or 3, H, W) -> {name: (B, C, H // s, W // s)}; e.g. vgg19 relu2_2: 128 ch at
        H/2, relu4_1: 512 ch at H/8 (pooling floors odd sizes).
    """

    def __init__(
        self,
        arch: str = "vgg19",
        layers: Sequence[str] = ("relu4_1",),
        normalize_imagenet: bool = False,
        weights: str | os.PathLike[str] | Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        layout = _layout(arch)
        names = [n for n, _, _ in layout]
        layers = tuple(layers)
        if not layers:
            raise ValueError("layers must not be empty")
        for name in layers:
            if name not in names:
                raise ValueError(f"{arch} has no layer {name!r}; choose from {names}")
        self.arch = arch
        self.layers = layers
        self.normalize_imagenet = normalize_imagenet
        self._index = {names.index(n): n for n in layers}
        last = max(self._index)
        mods: list[nn.Module] = []
        for name, cin, cout in layout[: last + 1]:
            if name.startswith("conv"):
                mods.append(nn.Conv2d(cin, cout, kernel_size=3, padding=1))
            elif name.startswith("relu"):
                mods.append(nn.ReLU(inplace=False))  # not in-place: returned activations must survive
            else:
                mods.append(nn.MaxPool2d(kernel_size=2, stride=2))
        self.features = nn.Sequential(*mods)
        self.channels = {n: layout[names.index(n)][2] for n in layers}
        self.strides = {n: layer_stride(n) for n in layers}
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        source = "random init (NOT pretrained)"
        if weights is not None:
            if isinstance(weights, Mapping):
                state, source = dict(weights), "given state dict"
            else:
                state, source = load_vgg_state_dict(arch, weights), str(weights)
            self.load_torchvision_state_dict(state, source=source)
        self.weights_source = source
        norm = "ImageNet mean/std normalised" if normalize_imagenet else "no input normalisation"
        self.description = f"{arch} features {list(layers)} from {source}; {norm}"
        self._freeze()

    @classmethod
    def from_pretrained(
        cls,
        arch: str = "vgg19",
        layers: Sequence[str] = ("relu4_1",),
        path: str | os.PathLike[str] | None = None,
        normalize_imagenet: bool = False,
    ) -> "VGGFeatures":
        """Build with weights from ``path`` or the hub cache (see :func:`load_vgg_state_dict`)."""
        state = load_vgg_state_dict(arch, path)
        net = cls(arch, layers, normalize_imagenet)
        found = path if path is not None else next(f for f in vgg_hub_candidates(arch) if f.is_file())
        net.load_torchvision_state_dict(state, source=str(found))
        net.weights_source = str(found)
        norm = "ImageNet mean/std normalised" if normalize_imagenet else "no input normalisation"
        net.description = f"{arch} ImageNet features {list(net.layers)} from {found}; {norm}"
        return net

    def load_torchvision_state_dict(self, state: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
        """Load ``features.N.*`` keys (classifier keys ignored); ``ValueError`` if not ``self.arch``."""
        _check_vgg_state_dict(state, self.arch, source)
        n = len(self.features)
        own = {}
        for k, v in state.items():
            m = re.match(r"features\.(\d+)\.(weight|bias)$", k)
            if m and int(m.group(1)) < n:
                own[f"{m.group(1)}.{m.group(2)}"] = v
        self.features.load_state_dict(own, strict=True)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 1|3, H, W) -> {layer: (B, C, h, w)} in ``self.layers`` order."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, 1|3, H, W), got {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.normalize_imagenet:
            x = (x - self.mean.to(x)) / self.std.to(x)
        found: dict[str, torch.Tensor] = {}
        for idx, mod in enumerate(self.features):
            x = mod(x)
            if idx in self._index:
                found[self._index[idx]] = x
        return {n: found[n] for n in self.layers}


class GradientPyramidFeatures(_FrozenExtractor):
    """Weight-free substitute for VGG features: intensity, Sobel x/y and Laplacian on a pyramid.

    The input is reduced to grey (channel mean; a grey image repeated to 3 channels stays itself),
    average-pooled by 2 (floor, like VGG's max-pool) down to each requested stride, and each level
    gives 4 channels: intensity, d/dx and d/dy (Sobel / 8, i.e. true per-pixel derivatives) and
    the normalised 3x3 Laplacian (/16, same kernel as the fusion JGrad term), replicate border.

    Layer names are VGG names (``relu4_1`` -> stride 8, ``pool2`` -> stride 4) or ``scale{k}``
    (stride 2**k), so losses written for VGG layers work unchanged; only the channel count (4)
    differs. It is *not* a learned perceptual space: it compares intensities and edges at scales.

    Shape:
        x: (B, 1 or 3, H, W) -> {name: (B, 4, H // s, W // s)}.
    """

    n_channels = 4

    def __init__(
        self,
        layers: Sequence[str] = ("scale0", "scale1", "scale2", "scale3"),
        normalize_imagenet: bool = False,
    ) -> None:
        super().__init__()
        layers = tuple(layers)
        if not layers:
            raise ValueError("layers must not be empty")
        self.layers = layers
        self.strides = {n: layer_stride(n) for n in layers}
        self.channels = {n: self.n_channels for n in layers}
        # normalize_imagenet is accepted for interface compatibility and ignored (no ImageNet stats).
        self.normalize_imagenet = False
        ident = torch.zeros(3, 3)
        ident[1, 1] = 1.0
        sob_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
        lap = torch.tensor([[1.0, 1.0, 1.0], [1.0, -8.0, 1.0], [1.0, 1.0, 1.0]]) / 16.0
        kernels = torch.stack([ident, sob_x, sob_x.t(), lap]).unsqueeze(1)  # (4, 1, 3, 3)
        self.register_buffer("kernels", kernels, persistent=False)
        self.description = (
            "GradientPyramidFeatures: fixed intensity + Sobel x/y + Laplacian responses on an average-pooled "
            f"pyramid, layers {list(layers)} (strides {[self.strides[n] for n in layers]}); offline substitute "
            "for ImageNet VGG, no learned weights"
        )
        self._freeze()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 1|3, H, W) -> {layer: (B, 4, H // s, W // s)} in ``self.layers`` order."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected (B, 1|3, H, W), got {tuple(x.shape)}")
        grey = x.mean(dim=1, keepdim=True)
        k = self.kernels.to(grey)
        levels: dict[int, torch.Tensor] = {}
        cur, s = grey, 1
        max_s = max(self.strides.values())
        while True:
            levels[s] = cur
            if s >= max_s:
                break
            if min(cur.shape[-2:]) < 2:
                raise ValueError(f"input {tuple(x.shape[-2:])} too small for stride {max_s}")
            cur, s = F.avg_pool2d(cur, 2), s * 2
        out: dict[str, torch.Tensor] = {}
        for name in self.layers:
            lvl = levels[self.strides[name]]
            out[name] = F.conv2d(F.pad(lvl, (1, 1, 1, 1), mode="replicate"), k)
        return out


def build_feature_extractor(
    kind: str = "auto",
    layers: Sequence[str] = ("relu4_1",),
    weights: str | os.PathLike[str] | None = None,
    arch: str = "vgg19",
    normalize_imagenet: bool = False,
) -> VGGFeatures | GradientPyramidFeatures:
    """Frozen feature extractor for perceptual losses.

    Args:
        kind: ``"vgg16"``/``"vgg19"`` (weights required: ``weights`` path or the hub cache, else
            ``FileNotFoundError``), ``"gradient"`` (:class:`GradientPyramidFeatures`), or ``"auto"``:
            VGG ``arch`` if its weights are found, else the gradient substitute with a logged warning.
            An explicit ``weights`` path that does not exist is an error even with ``"auto"``.
        layers: VGG layer names (the substitute maps them to the same strides).
        weights: explicit ``.pth``/``.safetensors`` file.
        arch: the VGG used by ``"auto"``.
        normalize_imagenet: see :class:`VGGFeatures`.

    Returns:
        The extractor; ``.description`` says what was used (copy it into model cards).
    """
    allowed = ("auto", "vgg16", "vgg19", "gradient")
    if kind not in allowed:
        raise UserError(f"kind must be one of {allowed}, got {kind!r}")
    if kind == "gradient":
        return GradientPyramidFeatures(layers)
    if kind in ("vgg16", "vgg19"):
        return VGGFeatures.from_pretrained(kind, layers, weights, normalize_imagenet)
    try:
        return VGGFeatures.from_pretrained(arch, layers, weights, normalize_imagenet)
    except FileNotFoundError as err:
        if weights is not None:
            raise
        log.warning("%s -- using GradientPyramidFeatures instead of %s", err, arch)
        return GradientPyramidFeatures(layers)
