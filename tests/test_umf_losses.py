"""UMF-CMGR losses: CPSTN (LSGAN, PST, edge, cross), registration, fusion (saliency, MS-SSIM, JGrad)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import correlate

from alignfuse.losses.fusion import (
    FusionLoss,
    joint_gradient_loss,
    ms_ssim,
    ssim_components,
    svs_map,
    svs_weights,
)
from alignfuse.losses.registration import RegistrationLoss, local_ncc_loss, smoothness
from alignfuse.losses.translation import (
    PST_LAYERS,
    CPSTNGeneratorLoss,
    EdgeLoss,
    PSTLoss,
    cross_regularisation,
    cycle_forward,
    default_style_weights,
    discriminator_loss,
    gram_matrix,
    laplacian_pyramid_residual,
    lsgan_loss,
    nyquist_excess,
)
from alignfuse.models.cpstn import build_cpstn
from alignfuse.models.vgg import GradientPyramidFeatures, VGGFeatures
from alignfuse.warp import warp




def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    x = torch.rand(1, 1, h, w, generator=gen(seed))
    x = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    return (x - x.min()) / (x.max() - x.min())


# ------------------------------------------------------------------------------ translation


def test_lsgan_and_discriminator_loss():
    assert lsgan_loss(torch.ones(2, 1, 3, 3), True) == 0
    assert lsgan_loss(torch.zeros(2, 1, 3, 3), False) == 0
    assert lsgan_loss(torch.zeros(1, 1, 3, 3), True) == 1

    def disc(x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3), keepdim=True)

    fake = torch.zeros(1, 1, 4, 4, requires_grad=True)
    assert discriminator_loss(disc, torch.ones(1, 1, 4, 4), fake) == 0
    assert fake.grad is None  # fakes are detached for the D step


def test_gram_and_style_weights():
    f = torch.rand(2, 3, 4, 5)
    g = gram_matrix(f)
    assert g.shape == (6, 6)
    flat = f.reshape(6, 20)
    torch.testing.assert_close(g, flat @ flat.t() / (2 * 3 * 4 * 5))  # official b*c*h*w normaliser
    assert gram_matrix(f, per_sample=True).shape == (2, 3, 3)
    assert default_style_weights(5) == (1 / 32, 1 / 16, 1 / 8, 1.0, 1.0)
    assert default_style_weights(4) == (1 / 16, 1 / 8, 1.0, 1.0)


def test_pst_loss_with_substitute():
    pst = PSTLoss(GradientPyramidFeatures(PST_LAYERS))
    assert pst.content_layer == "relu4_1" and pst.style_weights == (1 / 32, 1 / 16, 1 / 8, 1.0, 1.0)
    y = smooth_image(32, 32) * 2 - 1
    assert pst(y, y) == 0
    x = (y.clone() * 0.3).requires_grad_(True)
    first, last = _optimise(pst, x, y, lr=0.05, steps=10)
    assert first > 0
    assert last < first


def _optimise(loss_fn, x: torch.Tensor, y: torch.Tensor, lr: float, steps: int) -> tuple[float, float]:
    """Adam on the pixels of ``x`` towards ``y``; returns the loss before and after."""
    opt = torch.optim.Adam([x], lr=lr)
    first = float(loss_fn(x, y).detach())
    for _ in range(steps):
        loss = loss_fn(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, float(loss_fn(x, y).detach())


def test_pst_loss_with_vgg_layers():
    feats = VGGFeatures("vgg19", PST_LAYERS)  # random init is enough to check the plumbing
    pst = PSTLoss(feats)
    assert pst.layers == PST_LAYERS and pst.content_layer == "relu4_1"
    y = torch.rand(1, 3, 32, 32) * 2 - 1
    x = (torch.rand(1, 1, 32, 32) * 2 - 1).expand(1, 3, 32, 32).clone().requires_grad_(True)
    assert pst(y, y) == 0
    loss = pst(x, y)
    loss.backward()
    assert loss > 0 and x.grad.abs().sum() > 0
    c = pst.components(x, y)
    assert set(c) == {"pixel", "content", "style"}


def test_edge_loss():
    x = smooth_image(32, 32)
    # the residual of a constant image is 0 away from the border (the official replicate padding of
    # the zero-inserted image leaves a border response, kept on purpose)
    res = laplacian_pyramid_residual(torch.full((1, 1, 12, 13), 0.3))
    torch.testing.assert_close(res[..., 2:-2, 2:-2], torch.zeros(1, 1, 8, 9))
    edge = EdgeLoss()
    assert float(edge(x, x)) == pytest.approx(1e-3)  # the Charbonnier floor eps
    y = torch.rand(1, 1, 32, 32, generator=gen(2))
    assert float(edge(x, y)) > 0.01
    first, last = _optimise(edge, x.clone().requires_grad_(True), y, lr=0.02, steps=15)
    assert last < first


def test_cross_regularisation():
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 1, 16, 16)
    total, parts = cross_regularisation(b, b, a, a)
    assert parts["content"] == 0 and float(total) == pytest.approx(8 * 2 * 1e-3)
    total2, _ = cross_regularisation(b, torch.rand(1, 1, 16, 16), a, a)
    assert total2 > total


def test_cpstn_generator_loss_backprops_to_both_generators():
    torch.manual_seed(0)
    nets = build_cpstn({"ngf": 4, "n_blocks": 1, "ndf": 4}, generator=gen(0))
    loss_fn = CPSTNGeneratorLoss(PSTLoss(GradientPyramidFeatures(PST_LAYERS)))
    real_a = torch.rand(1, 3, 32, 32) * 2 - 1
    real_b = torch.rand(1, 1, 32, 32) * 2 - 1
    out = cycle_forward(nets.g_a, nets.g_b, real_a, real_b)
    preds = {"pred_fake_b": nets.d_a(out["fake_b"]), "pred_fake_a": nets.d_b(out["fake_a"])}
    total, terms = loss_fn(real_a, real_b, **out, **preds)
    assert set(terms) == {"gan_a", "gan_b", "pst_a", "pst_b", "cross_content", "cross_edge", "total"}
    assert terms["total"] == pytest.approx(float(total.detach()))
    total.backward()
    for g in (nets.g_a, nets.g_b):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in g.parameters())


# ----------------------------------------------------------------------------- registration


def _outputs(fixed: torch.Tensor, moving: torch.Tensor, field: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"aligned": warp(moving, field), "field": field, "fixed_warped_back": warp(fixed, -field)}


def test_smoothness_penalties():
    field = torch.zeros(1, 2, 8, 8)
    field[:, 0] = 3.0
    assert smoothness(field, "l2") == 0 and smoothness(field, "l1") == 0  # a translation is free
    field[:, 0, :, 4:] = 5.0  # a 2 px step along x in dx
    dx_mean = 2 * 8 / (8 * 7 * 2)  # one column of jumps among 7, in one of the 2 channels
    assert float(smoothness(field, "l1")) == pytest.approx(0.5 * dx_mean * 1)
    assert float(smoothness(field, "l2")) == pytest.approx(0.5 * dx_mean * 2)


@pytest.mark.parametrize("similarity", ["l1", "feature", "ncc"])
def test_registration_loss_prefers_the_true_field(similarity):
    fixed = smooth_image(32, 32, seed=3)
    shift = torch.zeros(1, 2, 32, 32)
    shift[:, 0] = -2.0
    moving = warp(fixed, shift)
    true = -shift
    feats = GradientPyramidFeatures(("relu1_1", "relu2_1")) if similarity == "feature" else None
    loss_fn = RegistrationLoss(feats, similarity=similarity)
    good, terms = loss_fn(fixed, moving, _outputs(fixed, moving, true))
    bad, _ = loss_fn(fixed, moving, _outputs(fixed, moving, torch.zeros_like(true)))
    assert set(terms) == {"sim_fwd", "sim_bwd", "smooth", "pixel_l1", "total"}
    assert float(good) < float(bad)
    field = torch.zeros_like(true, requires_grad=True)
    loss, _ = loss_fn(fixed, moving, _outputs(fixed, moving, field))
    loss.backward()
    assert float(field.grad[:, 0, 4:-4, 4:-4].mean()) < 0  # gradient descent increases dx: the right way


def test_registration_loss_zero_for_identical_and_weights():
    x = smooth_image(24, 24)
    loss_fn = RegistrationLoss(similarity="l1", lambda_rev=0.2, lambda_smooth=10.0)
    total, terms = loss_fn(x, x, _outputs(x, x, torch.zeros(1, 2, 24, 24)))
    assert float(total) == pytest.approx(0, abs=1e-6) and terms["pixel_l1"] == pytest.approx(0, abs=1e-6)
    y = torch.rand(1, 1, 24, 24, generator=gen(5))
    field = torch.rand(1, 2, 24, 24, generator=gen(6))
    total, t = loss_fn(x, y, _outputs(x, y, field))
    assert t["total"] == pytest.approx(t["sim_fwd"] + 0.2 * t["sim_bwd"] + 10.0 * t["smooth"], rel=1e-5)
    assert local_ncc_loss(x, x) < 0.05 < local_ncc_loss(x, y)
    with pytest.raises(ValueError):
        RegistrationLoss(similarity="mse")


# ----------------------------------------------------------------------------------- fusion


def naive_svs_map(img_u8: np.ndarray) -> np.ndarray:
    """The official loop (data/get_svs_map.py) for one uint8 image."""
    hist = np.zeros(256)
    for v in img_u8.ravel():
        hist[v] += 1
    sal = np.zeros(256)
    for i in range(256):
        for j in range(256):
            sal[i] += abs(j - i) * hist[j]
    m = sal[img_u8]
    return np.zeros_like(m) if m.max() == 0 else m / m.max()


def test_svs_weights_match_loop_reference_and_sum_to_one():
    rng = np.random.default_rng(0)
    ir_u8 = rng.integers(0, 256, size=(2, 1, 9, 11))
    vi_u8 = rng.integers(0, 120, size=(2, 1, 9, 11))
    ir, vi = torch.tensor(ir_u8 / 255.0, dtype=torch.float32), torch.tensor(vi_u8 / 255.0, dtype=torch.float32)
    w_ir, w_vi = svs_weights(ir, vi)
    torch.testing.assert_close(w_ir + w_vi, torch.ones_like(w_ir))
    assert w_ir.min() >= 0 and w_ir.max() <= 1
    for b in range(2):  # per image in the batch
        m_ir, m_vi = naive_svs_map(ir_u8[b, 0]), naive_svs_map(vi_u8[b, 0])
        np.testing.assert_allclose(w_ir[b, 0].numpy(), 0.5 + 0.5 * (m_ir - m_vi), atol=1e-6)
    assert torch.equal(svs_map(torch.full((1, 1, 4, 4), 0.5)), torch.zeros(1, 1, 4, 4))  # flat: max 0
    w8, _ = svs_weights(ir, vi, as_uint8=True)
    assert torch.equal(w8 * 255, torch.floor(w8 * 255 + 1e-4))


def naive_ssim(x: np.ndarray, y: np.ndarray, max_val: float) -> tuple[float, float]:
    """Independent SSIM: scipy correlate, zero border, 11x11 Gaussian sigma 1.5."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    k = np.outer(g, g) / np.outer(g, g).sum()

    def f(a: np.ndarray) -> np.ndarray:
        return correlate(a, k, mode="constant", cval=0.0)

    mu1, mu2 = f(x), f(y)
    s1, s2, s12 = f(x * x) - mu1**2, f(y * y) - mu2**2, f(x * y) - mu1 * mu2
    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    cs = (2 * s12 + c2) / (s1 + s2 + c2)
    return float((((2 * mu1 * mu2 + c1) / (mu1**2 + mu2**2 + c1)) * cs).mean()), float(cs.mean())


def test_ssim_components_match_independent_reference():
    x, y = smooth_image(24, 30, seed=1), smooth_image(24, 30, seed=2)
    for max_val in (1.0, 255.0):
        s, cs = ssim_components(x, y, max_val)
        rs, rcs = naive_ssim(x[0, 0].double().numpy(), y[0, 0].double().numpy(), max_val)
        assert float(s) == pytest.approx(rs, abs=1e-5) and float(cs) == pytest.approx(rcs, abs=1e-5)


def test_ms_ssim_identity_and_max_val_quirk():
    x = torch.rand(1, 1, 128, 128, generator=gen(0))
    y = torch.rand(1, 1, 128, 128, generator=gen(1))
    assert float(ms_ssim(x, x, 1.0)) == pytest.approx(1.0, abs=1e-5)
    assert float(ms_ssim(x, x, 255.0)) == pytest.approx(1.0, abs=1e-5)
    assert float(ms_ssim(x, y, 255.0)) > 0.99  # official quirk: unrelated images look identical
    assert float(ms_ssim(x, y, 1.0)) < 0.5
    assert float(ms_ssim(x[..., :33, :51], y[..., :33, :51], 1.0)) < 1  # odd sizes work
    with pytest.raises(ValueError):
        ms_ssim(x[..., :8, :8], y[..., :8, :8])


def test_joint_gradient_loss():
    ir, vis = smooth_image(20, 20, 1), smooth_image(20, 20, 2)
    assert joint_gradient_loss(ir, ir, ir) == 0
    assert joint_gradient_loss(torch.full_like(ir, 0.5), ir, vis) > 0


@pytest.mark.parametrize("config", ["official", "paper"])
def test_fusion_loss_terms_and_toy_optimisation(config):
    ir, vis = smooth_image(32, 32, 1), smooth_image(32, 32, 2)
    loss_fn = FusionLoss(config)
    logits = torch.zeros(1, 1, 32, 32, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    first, terms = loss_fn(torch.sigmoid(logits), ir, vis)
    assert set(terms) == {"ssim", "svs", "grad", "total"}
    w = {"official": (1, 20, 5), "paper": (1, 5, 20)}[config]
    assert terms["total"] == pytest.approx(w[0] * terms["ssim"] + w[1] * terms["svs"] + w[2] * terms["grad"], rel=1e-5)
    for _ in range(20):
        loss, _ = loss_fn(torch.sigmoid(logits), ir, vis)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss_fn(torch.sigmoid(logits), ir, vis)[1]["total"] < 0.7 * float(first.detach())


def test_fusion_loss_official_zero_at_target():
    ir, vis = smooth_image(32, 32, 1), smooth_image(32, 32, 2)
    w_ir, w_vi = svs_weights(ir, vis)
    target = w_ir * ir + w_vi * vis
    _, terms = FusionLoss("official")(target, ir, vis, w_ir, w_vi)
    assert terms["svs"] == 0 and terms["ssim"] == pytest.approx(0, abs=1e-6)
    with pytest.raises(TypeError):
        FusionLoss("official", lambda_x=1)
    assert FusionLoss("official", max_val=1.0).max_val == 1.0
    single, _ = FusionLoss("paper", multiscale=False)(target, ir, vis)
    assert float(single) > 0


def test_nyquist_excess_penalises_only_period2_texture_beyond_the_target():
    y, x = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 48), indexing="ij")
    smooth = (0.3 * x + 0.5 * y * y)[None, None]
    checker = 0.1 * ((torch.arange(40)[:, None] + torch.arange(48)[None]) % 2).float()[None, None]
    stripes = 0.1 * (torch.arange(48) % 2).float().expand(40, 48)[None, None]  # period 2 in x only
    assert float(nyquist_excess(smooth, smooth)) < 1e-3  # ramps and curvature pass (almost) nothing
    assert float(nyquist_excess(smooth + checker, smooth)) > 0.01  # amplitude 0.05 in one of three filters
    assert float(nyquist_excess(smooth + stripes, smooth)) > 0.01
    # real texture of the target costs nothing: only the excess over it counts
    assert float(nyquist_excess(smooth + checker, smooth + checker)) < 1e-6
    assert float(nyquist_excess(smooth, smooth + checker)) < 1e-6
