"""CPSTN losses (UMF-CMGR stage 1), exactly as coded in the official ``backward_G`` (spec §1.1).

L_G = LSGAN(D_A(fake_B), 1) + LSGAN(D_B(fake_A), 1)
      + 10 * PST(rec_A, real_A) + 10 * PST(rec_B, real_B)
      + 8 * L1(fake_B, rec_B) + 8 * L1(fake_A, rec_A)           (cross content)
      + 8 * Edge(fake_B, rec_B) + 8 * Edge(fake_A, rec_A)       (cross edge)
with A = VIS, B = IR, fake_B = G_A(real_A), rec_A = G_B(fake_B), fake_A = G_B(real_B),
rec_B = G_A(fake_A); all images in [-1, 1] (CycleGAN convention, no ImageNet normalisation).

Code vs paper (spec pitfalls 4-6): PST = pixel L1 + L1 on ONE perceptual layer (relu4_1) +
100 * sum_i w_i * MSE(Gram_i), w = [1/32, 1/16, 1/8, 1, 1] on the *style* term; the edge term is a
Laplacian-pyramid residual (5-tap Gaussian), Charbonnier eps = 1e-3, not a 3x3 Laplacian; the
cross terms compare the two cycles, so A and B must be the same scene with the same crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from alignfuse.models.vgg import GradientPyramidFeatures, VGGFeatures, build_feature_extractor

__all__ = [
    "PST_LAYERS",
    "lsgan_loss",
    "discriminator_loss",
    "gram_matrix",
    "default_style_weights",
    "PSTLoss",
    "laplacian_pyramid_residual",
    "charbonnier",
    "EdgeLoss",
    "nyquist_excess",
    "cross_regularisation",
    "cycle_forward",
    "CPSTNGeneratorLoss",
]

# VGG19 slices [0:2), [2:7), [7:12), [12:21), [21:30) of the official VGGLoss.
PST_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")

FeatureExtractor = VGGFeatures | GradientPyramidFeatures


def lsgan_loss(pred: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """LSGAN: MSE between discriminator logits (any shape) and the constant 1 (real) or 0 (fake)."""
    target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
    return F.mse_loss(pred, target)


def discriminator_loss(disc: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """0.5 * (LSGAN(D(real), 1) + LSGAN(D(fake.detach()), 0)); pass ``fake`` through an ImagePool first."""
    return 0.5 * (lsgan_loss(disc(real), True) + lsgan_loss(disc(fake.detach()), False))


def gram_matrix(feat: torch.Tensor, per_sample: bool = False) -> torch.Tensor:
    """Gram matrix of (B, C, H, W) features.

    ``per_sample=False`` (official): reshape to (B*C, H*W), G = F F^T / (B*C*H*W) -> (B*C, B*C);
    for B > 1 this mixes samples (the official batch size is 1). ``per_sample=True``:
    (B, C, C) with G_b = F_b F_b^T / (C*H*W).
    """
    b, c, h, w = feat.shape
    if per_sample:
        f = feat.reshape(b, c, h * w)
        return f @ f.transpose(1, 2) / (c * h * w)
    f = feat.reshape(b * c, h * w)
    return f @ f.t() / (b * c * h * w)


def default_style_weights(n: int) -> tuple[float, ...]:
    """Official w = (1/32, 1/16, 1/8, 1, 1) for 5 layers; for n layers: 1 for the deepest two,
    2**-(n - i) for the others (the same tail pattern)."""
    return tuple(1.0 if i >= n - 2 else 2.0 ** -(n - i) for i in range(n))


class PSTLoss(nn.Module):
    """Perceptual style transfer loss as coded (``VGGLoss`` of ``CPSTN/models/networks.py``).

    PST(x, y) = L1(x, y) + L1(phi_c(x), phi_c(y)) + 100 * sum_i w_i * MSE(Gram(phi_i(x)), Gram(phi_i(y)))

    ``y`` (the real image) goes through the extractor under ``no_grad``. Works with whatever layers
    the extractor provides: VGG19 relu1_1..relu5_1 (official), or the gradient substitute.

    Args:
        feature_extractor: frozen extractor (``None``: ``build_feature_extractor('auto', PST_LAYERS)``).
        content_layer: layer of the perceptual L1; default ``relu4_1`` if present, else the
            second-deepest layer (which is relu4_1 for the official five).
        style_weights: one weight per layer (deepest last); default :func:`default_style_weights`.
        lambda_pixel, lambda_content, lambda_style: 1, 1, 100 as coded.
        per_sample_gram: see :func:`gram_matrix` (False = official).

    Shape: x, y (B, C, H, W), C in {1, 3} -> scalar.
    """

    def __init__(
        self,
        feature_extractor: FeatureExtractor | None = None,
        content_layer: str | None = None,
        style_weights: Sequence[float] | None = None,
        lambda_pixel: float = 1.0,
        lambda_content: float = 1.0,
        lambda_style: float = 100.0,
        per_sample_gram: bool = False,
    ) -> None:
        super().__init__()
        if feature_extractor is None:
            feature_extractor = build_feature_extractor("auto", layers=PST_LAYERS)
        self.features = feature_extractor
        # layers ordered shallow -> deep so weights line up with the official list
        self.layers = tuple(sorted(feature_extractor.layers, key=lambda n: feature_extractor.strides[n]))
        if content_layer is None:
            content_layer = "relu4_1" if "relu4_1" in self.layers else self.layers[max(len(self.layers) - 2, 0)]
        if content_layer not in self.layers:
            raise ValueError(f"content layer {content_layer!r} not among the extractor's layers {self.layers}")
        self.content_layer = content_layer
        weights = default_style_weights(len(self.layers)) if style_weights is None else tuple(style_weights)
        if len(weights) != len(self.layers):
            raise ValueError(f"{len(weights)} style weights for {len(self.layers)} layers {self.layers}")
        self.style_weights = weights
        self.lambda_pixel, self.lambda_content, self.lambda_style = lambda_pixel, lambda_content, lambda_style
        self.per_sample_gram = per_sample_gram

    def components(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted ``pixel``, ``content`` and (w-weighted, not x100) ``style`` terms."""
        fx = self.features(x)
        with torch.no_grad():
            fy = self.features(y)
        style = x.new_zeros(())
        for name, w in zip(self.layers, self.style_weights):
            gx = gram_matrix(fx[name], self.per_sample_gram)
            gy = gram_matrix(fy[name], self.per_sample_gram)
            style = style + w * F.mse_loss(gx, gy)
        return {
            "pixel": F.l1_loss(x, y),
            "content": F.l1_loss(fx[self.content_layer], fy[self.content_layer]),
            "style": style,
        }

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.components(x, y)
        return self.lambda_pixel * c["pixel"] + self.lambda_content * c["content"] + self.lambda_style * c["style"]


def _gauss5(channels: int, like: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([0.05, 0.25, 0.4, 0.25, 0.05], device=like.device, dtype=like.dtype)
    return (k[:, None] * k[None, :]).expand(channels, 1, 5, 5)  # sums to 1


def laplacian_pyramid_residual(x: torch.Tensor) -> torch.Tensor:
    """One Laplacian-pyramid level (official ``EdgeLoss.laplacian_kernel``): x - K*U(D(K*x)).

    K = k^T k with k = [.05, .25, .4, .25, .05], depthwise, replicate padding 2; D keeps every 2nd
    pixel, U puts them back (x4) into zeros of the original size. (B, C, H, W) -> (B, C, H, W).
    """
    c = x.shape[1]
    k = _gauss5(c, x)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (2, 2, 2, 2), mode="replicate"), k, groups=c)

    filtered = blur(x)
    up = torch.zeros_like(filtered)
    up[..., ::2, ::2] = filtered[..., ::2, ::2] * 4.0
    return x - blur(up)


def charbonnier(diff: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """mean(sqrt(d^2 + eps^2)); eps inside the root keeps the gradient finite at d = 0."""
    return torch.sqrt(diff * diff + eps * eps).mean()


class EdgeLoss(nn.Module):
    """Charbonnier(Lap(x) - Lap(y)) with the Laplacian-pyramid residual (spec pitfall 6).

    The official code repeats 1-channel inputs to 3 channels first; with a depthwise filter and a
    mean that gives the same value, so it is skipped. Note the floor is eps (1e-3) for x == y.
    """

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return charbonnier(laplacian_pyramid_residual(x) - laplacian_pyramid_residual(y), self.eps)


def nyquist_excess(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Period-2 texture of ``fake`` beyond the one ``real`` has: mean relu(|N * fake| - |N * real|) over the three
    period-2 filters N (x, y and both: [1, -2, 1] second differences, smoothed by [1, 2, 1] across), which pass the
    checkerboard at the Nyquist frequency with gain 1 and linear ramps and flat regions with gain 0.

    Why: a MIND term rewards local self-similarity patterns and, on flat regions, a period-2 texture lowers it;
    this penalises only the excess over the real IR, so real fine texture costs nothing. (B, C, H, W) -> scalar.
    """
    d2 = torch.tensor([1.0, -2.0, 1.0], device=fake.device, dtype=fake.dtype) / 4.0
    sm = torch.tensor([1.0, 2.0, 1.0], device=fake.device, dtype=fake.dtype) / 4.0
    kernels = torch.stack([d2[:, None] * d2[None, :], sm[:, None] * d2[None, :], d2[:, None] * sm[None, :]])
    c = fake.shape[1]
    weight = kernels[:, None].repeat(c, 1, 1, 1)  # (3C, 1, 3, 3), depthwise

    def response(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (1, 1, 1, 1), mode="replicate"), weight, groups=c).abs()

    return F.relu(response(fake) - response(real)).mean()


def cross_regularisation(
    fake_b: torch.Tensor,
    rec_b: torch.Tensor,
    fake_a: torch.Tensor,
    rec_a: torch.Tensor,
    edge: EdgeLoss | None = None,
    lambda_con: float = 8.0,
    lambda_edge: float = 8.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Cross-cycle regularisation as coded: pseudo-IR vs reconstructed IR, pseudo-VIS vs reconstructed VIS.

    = 8 * (L1(fake_B, rec_B) + L1(fake_A, rec_A)) + 8 * (Edge(fake_B, rec_B) + Edge(fake_A, rec_A)).
    Meaningful only for paired, identically cropped A/B samples (spec pitfall 5).
    Returns (weighted total, {"content", "edge"} unweighted tensors).
    """
    edge = EdgeLoss() if edge is None else edge
    con = F.l1_loss(fake_b, rec_b) + F.l1_loss(fake_a, rec_a)
    edg = edge(fake_b, rec_b) + edge(fake_a, rec_a)
    return lambda_con * con + lambda_edge * edg, {"content": con, "edge": edg}


def cycle_forward(
    g_a: nn.Module, g_b: nn.Module, real_a: torch.Tensor, real_b: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Both CycleGAN cycles: fake_b = G_A(A), rec_a = G_B(fake_b), fake_a = G_B(B), rec_b = G_A(fake_a)."""
    fake_b = g_a(real_a)
    fake_a = g_b(real_b)
    return {"fake_b": fake_b, "rec_a": g_b(fake_b), "fake_a": fake_a, "rec_b": g_a(fake_a)}


class CPSTNGeneratorLoss(nn.Module):
    """The CPSTN generator objective of spec §1.1 (identity loss 0, as configured).

    Args:
        pst: the :class:`PSTLoss` (its extractor decides VGG vs substitute).
        lambda_a, lambda_b: PST weights (10, 10).
        lambda_con, lambda_edge: cross content / edge weights (8, 8).
    """

    def __init__(
        self,
        pst: PSTLoss | None = None,
        lambda_a: float = 10.0,
        lambda_b: float = 10.0,
        lambda_con: float = 8.0,
        lambda_edge: float = 8.0,
        edge_eps: float = 1e-3,
    ) -> None:
        super().__init__()
        self.pst = PSTLoss() if pst is None else pst
        self.edge = EdgeLoss(edge_eps)
        self.lambda_a, self.lambda_b = lambda_a, lambda_b
        self.lambda_con, self.lambda_edge = lambda_con, lambda_edge

    def forward(
        self,
        real_a: torch.Tensor,
        real_b: torch.Tensor,
        fake_b: torch.Tensor,
        rec_a: torch.Tensor,
        fake_a: torch.Tensor,
        rec_b: torch.Tensor,
        pred_fake_b: torch.Tensor,
        pred_fake_a: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """All images in [-1, 1]; ``pred_fake_b = D_A(fake_b)``, ``pred_fake_a = D_B(fake_a)`` (logits).

        Returns (total, {"gan_a", "gan_b", "pst_a", "pst_b", "cross_content", "cross_edge", "total"})
        with unweighted float terms (except ``total``).
        """
        gan_a = lsgan_loss(pred_fake_b, True)
        gan_b = lsgan_loss(pred_fake_a, True)
        pst_a = self.pst(rec_a, real_a)
        pst_b = self.pst(rec_b, real_b)
        cross, parts = cross_regularisation(fake_b, rec_b, fake_a, rec_a, self.edge, self.lambda_con, self.lambda_edge)
        total = gan_a + gan_b + self.lambda_a * pst_a + self.lambda_b * pst_b + cross
        terms = {
            "gan_a": gan_a,
            "gan_b": gan_b,
            "pst_a": pst_a,
            "pst_b": pst_b,
            "cross_content": parts["content"],
            "cross_edge": parts["edge"],
            "total": total,
        }
        return total, {k: float(v.detach()) for k, v in terms.items()}
