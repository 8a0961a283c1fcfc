"""Tests for the RFVIF network (alignfuse.models.rfvif) and its loss (alignfuse.losses.rfvif).

Everything runs on CPU at 32-64 px with tiny widths; the paper configuration is only built and counted
on the meta device.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.testing import assert_close

from alignfuse.losses.rfvif import RFVIFLoss, alignment_loss, alignment_targets, perceptual_loss, pixel_loss
from alignfuse.models.rfvif import (
    MSRB,
    RFVIF,
    RFVIF_CONFIGS,
    FeatureAlignmentBlock,
    FeatureDynamicAlignment,
    FullResolutionIRAlignment,
    GlobalShiftEstimator,
    RFVIFConfig,
    count_params_and_macs,
    dynamic_depthwise_conv2d,
    local_similarity_aggregate,
    similarity_suppress,
    translate,
)
from alignfuse.models.pwf import laplacian_bands, reconstruct_bands
from alignfuse.stages import Fuser

TINY = replace(RFVIF_CONFIGS["cpu"], width=8, num_res_blocks=2)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _pair(b: int = 2, h: int = 32, w: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(b, 1, h, w), torch.rand(b, 1, h, w)


# ------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("size", [(37, 53), (32, 32), (9, 15)])
def test_output_shapes_any_size_cpu_config(size):
    h, w = size
    net = RFVIF("cpu").eval()
    ir, vis = _pair(2, h, w)
    with torch.no_grad():
        fused, aligned = net(ir, vis)
    assert fused.shape == (2, 1, h, w)
    hp, wp = -(-h // 8) * 8, -(-w // 8) * 8  # padded to multiples of 8
    assert [tuple(a.shape) for a in aligned] == [(2, 1, hp // s, wp // s) for s in (2, 4, 8)]
    assert torch.isfinite(fused).all() and fused.min() >= 0 and fused.max() <= 1
    assert_close(net.fuse(ir, vis), fused)


def test_bad_inputs_raise():
    net = RFVIF(TINY)
    with pytest.raises(ValueError):
        net(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError):
        net(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 24))
    with pytest.raises(ValueError):
        RFVIFConfig(num_fab=4)
    with pytest.raises(ValueError):
        RFVIFConfig(dkg_kernel_sizes=(3, 4))
    with pytest.raises(KeyError):
        RFVIF("nope")


def test_default_is_paper_config_and_config_roundtrip():
    assert RFVIFConfig() == RFVIF_CONFIGS["paper"]
    assert RFVIF_CONFIGS["paper"].width == 64 and RFVIF_CONFIGS["paper"].msrb_blocks == (3, 2, 2)
    assert RFVIF_CONFIGS["cpu"].width == 16 and RFVIF_CONFIGS["cpu"].msrb_blocks == (1, 1, 1)
    cfg = replace(TINY, lfr_temperature=0.1, use_cmf=False)
    assert RFVIFConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# ------------------------------------------------------------------------------------------ ablations

ABLATIONS = {
    "paper_defaults": {},
    "no_cm": {"use_cm": False},
    "no_fdam": {"use_fdam": False},
    "no_dkg": {"use_dkg": False},
    "no_cmf": {"use_cmf": False},
    "no_pffm": {"use_pffm": False},
    "no_lfr_vis": {"use_lfr_vis": False},
    "no_lfr_ir": {"use_lfr_ir": False},
    "no_lfr": {"use_lfr_vis": False, "use_lfr_ir": False},
    "one_fab": {"num_fab": 1},
    "three_fabs": {"num_fab": 3},
    "lfr_temperature": {"lfr_temperature": 0.1, "lfr_kernel": 5},
    "clamp_output": {"output_activation": "clamp"},
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_ablation_forward_backward(name):
    cfg = replace(TINY, **ABLATIONS[name])
    net = RFVIF(cfg).train()
    ir, vis = _pair(2, 24, 40)
    fused, aligned = net(ir, vis)
    assert fused.shape == (2, 1, 24, 40) and len(aligned) == 3
    loss = fused.mean() + sum(a.abs().mean() for a in aligned)
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), pname
    names = [n for n, _ in net.named_parameters()]
    if name == "no_cm":
        assert not any(".gamma_" in n or ".trunk." in n for n in names)
    if name == "no_fdam":
        assert not any(n.startswith("fdam.") for n in names)
    if name == "no_dkg":
        assert not any(".dkg." in n for n in names) and any(".static." in n for n in names)
    if name == "no_lfr":
        assert not any(".enc_vi." in n or ".enc_ir." in n for n in names)
    if name == "lfr_temperature":
        assert any(n.endswith("log_temperature") for n in names)


@pytest.mark.parametrize("name", ["fast-shift-pyr", "fast-skip"])
def test_inference_path_without_concatenations_matches_the_training_path(name):
    # at inference every conv of a concatenation runs as per-piece convs (conv_of_concat); with autograd on,
    # as one conv of the concatenation: the two must give the same image, with channels-last weights as shipped
    torch.manual_seed(3)
    net = RFVIF(name).eval().to(memory_format=torch.channels_last)
    with torch.no_grad():  # random, non-trivial weights everywhere (zero-initialised heads included)
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ir, vis = _pair(1, 40, 56)
    with torch.no_grad():
        fast = net(ir, vis).fused
    with torch.enable_grad():
        reference = net(ir, vis).fused.detach()
    assert fast.std() > 1e-3  # not a flat image that would match anything
    assert_close(fast, reference, atol=2e-5, rtol=0)


# ------------------------------------------------------------------------------------------ cost


def test_param_and_mac_counts():
    # the cpu and paper configurations; counted on the meta device (no real forward)
    p_cpu, m_cpu = count_params_and_macs(RFVIF("cpu"), 64)
    p_paper, m_paper = count_params_and_macs(RFVIF("paper"), 64)
    assert p_cpu == 710_615 and p_paper == 16_911_175  # spec section 5: 0.71 M and 16.9 M
    assert abs(m_cpu / 1e9 - 0.654) < 0.01 and abs(m_paper / 1e9 - 23.9) < 0.1
    # convolutions dominate: MACs scale with the pixel count (only the DKG FC layers do not)
    _, m_cpu128 = count_params_and_macs(RFVIF("cpu"), (128, 128))
    assert abs(m_cpu128 / m_cpu - 4.0) < 0.01
    # MSRB cost is analytic: 174 C^2 params (+7C biases) and 174 C^2 MACs per pixel
    c = 8
    p, m = count_params_and_macs(MSRB(c), (16, 12), num_inputs=1, in_channels=c)
    assert p == 174 * c * c + 7 * c and m == 174 * c * c * 16 * 12
    # meta-device counting equals a real forward
    tiny = RFVIF(TINY)
    assert count_params_and_macs(tiny, 32, on_meta=False) == count_params_and_macs(tiny, 32)


# ------------------------------------------------------------------------------------------ DKG identity init


def test_dynamic_depthwise_conv_identity_and_direction():
    x = torch.rand(2, 3, 9, 11)
    delta = torch.zeros(2, 3, 5, 5)
    delta[:, :, 2, 2] = 1.0
    assert_close(dynamic_depthwise_conv2d(x, delta), x)
    # a delta at (r + dy, r + dx) pulls from (y + dy, x + dx); per-sample kernels differ
    shift = torch.zeros(2, 3, 5, 5)
    shift[0, :, 2, 3] = 1.0  # sample 0: dx = +1
    shift[1, :, 1, 2] = 1.0  # sample 1: dy = -1
    out = dynamic_depthwise_conv2d(x, shift)
    assert_close(out[0, :, :, :-1], x[0, :, :, 1:])
    assert_close(out[1, :, 1:, :], x[1, :, :-1, :])


@pytest.mark.parametrize("dynamic", [True, False])
def test_fab_at_init_passes_features(dynamic):
    """At init (eval mode) a FAB is ReLU followed by a per-(sample, channel) gain in (0, 1): no spatial mixing."""
    c = 8
    fab = FeatureAlignmentBlock(c, (3, 5, 7), dynamic=dynamic, cam_hidden=4).eval()
    ref = torch.randn(2, c, 16, 20)
    x = torch.rand(2, c, 16, 20) + 0.1  # positive, so ReLU is the identity
    with torch.no_grad():
        y = fab(ref, x)
    gain = y / x
    per_channel = gain.mean(dim=(2, 3), keepdim=True)
    assert_close(gain, per_channel.expand_as(gain), atol=1e-3, rtol=1e-3)
    assert (per_channel > 0).all() and (per_channel < 1).all()
    # an impulse stays where it is, even at the border
    imp = torch.zeros(1, c, 16, 20)
    imp[0, :, 0, 19] = 1.0
    with torch.no_grad():
        y = fab(ref[:1], imp)
    assert (y.flatten(2).argmax(dim=2) == 19).all()
    leak = y.abs().sum() - y[0, :, 0, 19].abs().sum()
    assert leak < 1e-3 * y.abs().sum()
    # and the whole FDAM (2 FABs + merge) keeps each channel's pattern
    fdam = FeatureDynamicAlignment(c, 2, (3, 5, 7), dynamic=dynamic, cam_hidden=4).eval()
    with torch.no_grad():
        z = fdam(ref, x)
    assert F.cosine_similarity(z.flatten(2), x.flatten(2), dim=2).min() > 0.9999


def test_dkg_init_identity_at_network_level():
    # the first FAB's generated kernels are (numerically) centred deltas for any input pair
    net = RFVIF(TINY)
    dkg = net.fdam[0].fabs[0].dkg
    ref, x = torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8)
    for theta, k in zip(dkg(ref, x), (3, 5, 7)):
        delta = torch.zeros(k, k)
        delta[k // 2, k // 2] = 1.0
        assert_close(theta, delta.expand_as(theta), atol=1e-2, rtol=0)


# ------------------------------------------------------------------------------------------ LFR functions


def test_local_similarity_aggregate_properties():
    feat = torch.randn(1, 6, 10, 12)
    # sharp temperature: each pixel takes the neighbour most similar to the reference
    ref = torch.roll(feat, shifts=(0, -1), dims=(2, 3))  # ref[p] = feat[p + (0, +1)]
    out = local_similarity_aggregate(feat, ref, kernel_size=3, temperature=1e-3)
    assert_close(out[..., :, :-1], ref[..., :, :-1], atol=1e-4, rtol=1e-4)
    # constant features: the paper's softmax is a weighted mean of identical vectors in the interior
    const = torch.ones(1, 4, 6, 6)
    out = local_similarity_aggregate(const, torch.randn(1, 4, 6, 6), kernel_size=3)
    assert_close(out[..., 1:-1, 1:-1], const[..., 1:-1, 1:-1])


def test_similarity_suppress_known_values():
    feat = torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)
    same, orth, opp = feat, torch.tensor([0.0, 3.0]).view(1, 2, 1, 1), -2 * feat
    assert_close(similarity_suppress(feat, same), feat)  # cos 1 -> unchanged
    assert_close(similarity_suppress(feat, orth), 2 * feat)  # cos 0 -> doubled
    assert_close(similarity_suppress(feat, opp), 3 * feat)  # cos -1 -> tripled


# ------------------------------------------------------------------------------------------ loss


def test_loss_terms_known_values():
    fused = torch.full((1, 1, 16, 16), 0.2)
    vis, ir = torch.zeros_like(fused), torch.ones_like(fused)
    assert_close(pixel_loss(fused, vis, ir, alpha=0.3), torch.tensor(0.7 * 0.2 + 0.3 * 0.8))
    # heads equal to the GT pyramid give zero alignment loss, also for odd sizes (padding mirrored)
    ir_odd = torch.rand(2, 1, 37, 53)
    sizes = [(20, 28), (10, 14), (5, 7)]
    targets = alignment_targets(ir_odd, sizes)
    assert [tuple(t.shape[-2:]) for t in targets] == sizes
    assert alignment_loss(targets, ir_odd) == 0
    assert_close(alignment_loss([t + 0.1 for t in targets], ir_odd), torch.tensor(0.3))
    # no feature extractor: the perceptual term is reported as 0
    total, terms = RFVIFLoss()(fused, [], vis, ir)
    assert terms["perceptual"] == 0.0 and terms["align"] == 0.0
    assert abs(terms["total"] - terms["pixel"]) < 1e-7 and abs(float(total) - 0.5 * 0.2 - 0.5 * 0.8) < 1e-6


def test_perceptual_term_uses_extractor_and_only_fused_gets_gradient():
    phi = nn.Conv2d(1, 4, 3, padding=1)
    fused = torch.rand(2, 1, 16, 16, requires_grad=True)
    vis = torch.rand(2, 1, 16, 16, requires_grad=True)
    ir = torch.rand(2, 1, 16, 16, requires_grad=True)
    _, terms = RFVIFLoss(feature_extractor=phi)(fused, [], vis, ir)
    with torch.no_grad():
        expect = 0.4 * F.mse_loss(phi(fused), phi(vis)) + 0.6 * F.mse_loss(phi(fused), phi(ir))
    assert abs(terms["perceptual"] - float(expect)) < 1e-6 and terms["perceptual"] > 0
    # the targets' features are constants: only the fused branch carries gradient
    perceptual_loss(fused, vis, ir, phi, beta=0.6).backward()
    assert fused.grad is not None and vis.grad is None and ir.grad is None


def _shifted_square_batch(b: int = 2, size: int = 32, shift: tuple[int, int] = (3, 2)):
    """VIS: textured background + square; IR (GT-aligned): hot square; IR input: the IR shifted by `shift`."""
    g = torch.Generator().manual_seed(1)
    vis = 0.3 + 0.1 * torch.rand(b, 1, size, size, generator=g)
    ir_gt = torch.full((b, 1, size, size), 0.1)
    vis[..., 10:20, 12:22] = 0.6
    ir_gt[..., 10:20, 12:22] = 0.9
    ir_in = torch.roll(ir_gt, shifts=shift, dims=(2, 3))
    return ir_in, vis, ir_gt


def test_loss_decreases_on_shifted_square_toy():
    net = RFVIF(TINY).train()
    criterion = RFVIFLoss(feature_extractor=nn.Conv2d(1, 4, 3, padding=1).requires_grad_(False))
    ir_in, vis, ir_gt = _shifted_square_batch()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    history = []
    for _ in range(20):
        fused, aligned = net(ir_in, vis)
        total, terms = criterion(fused, aligned, vis, ir_gt)
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(terms)
    first, last = history[0], history[-1]
    assert last["total"] < 0.7 * first["total"], (first, last)
    assert last["align"] < first["align"]


# ------------------------------------------------------------------------------------------ weights + stage


def test_safetensors_roundtrip_identical_outputs(tmp_path):
    cfg = replace(TINY, lfr_temperature=0.5)
    net = RFVIF(cfg)
    # make BN running stats non-trivial
    net.train()
    with torch.no_grad():
        net(*_pair(2, 32, 32))
    net.eval()
    path = tmp_path / "rfvif.safetensors"
    save_file(net.state_dict(), str(path), metadata={"config": json.dumps(cfg.to_dict())})
    torch.manual_seed(123)
    clone = RFVIF(RFVIFConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))).eval()
    clone.load_state_dict(load_file(str(path)))
    ir, vis = _pair(1, 27, 33)
    with torch.no_grad():
        a, b = net(ir, vis), clone(ir, vis)
    assert torch.equal(a.fused, b.fused)
    assert all(torch.equal(x, y) for x, y in zip(a.aligned_ir, b.aligned_ir))


def test_fuser_stage_wrapper():
    """The rfvif pipeline's fuser stage: NetFuser around the network, reading its ``fused`` output."""
    from alignfuse.learned_stages import NetFuser

    net = RFVIF(TINY).train()
    fuser = NetFuser(net, output="fused")
    assert isinstance(fuser, Fuser) and not net.training
    ir = torch.rand(2, 1, 20, 28)
    vis_rgb = torch.rand(2, 3, 20, 28, requires_grad=True)
    out = fuser(ir, vis_rgb)
    assert out.shape == (2, 1, 20, 28) and not out.requires_grad
    gray = 0.299 * vis_rgb[:, :1] + 0.587 * vis_rgb[:, 1:2] + 0.114 * vis_rgb[:, 2:]
    with torch.no_grad():
        assert_close(out, net.fuse(ir, gray.detach()))


def test_joint_gradient_term_is_optional_and_prefers_sharp_output():
    import torch.nn.functional as F

    from alignfuse.losses.rfvif import RFVIFLoss

    torch.manual_seed(0)
    vis, ir = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    sharp = 0.5 * (vis + ir)
    blurred = F.avg_pool2d(F.pad(sharp, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    paper = RFVIFLoss()
    _, terms = paper(sharp, [], vis, ir)
    assert terms["grad"] == 0.0
    with_grad = RFVIFLoss(grad_weight=10.0)
    total_sharp, t_sharp = with_grad(sharp, [], vis, ir)
    _, t_blur = with_grad(blurred, [], vis, ir)
    assert t_blur["grad"] > t_sharp["grad"] > 0
    assert float(total_sharp) == pytest.approx(t_sharp["pixel"] + 10.0 * t_sharp["grad"], rel=1e-5)
    with pytest.raises(ValueError, match="grad_weight"):
        RFVIFLoss(grad_weight=-1)


def test_teacher_term_pulls_towards_the_teacher_and_needs_one():
    from alignfuse.losses.rfvif import RFVIFLoss

    torch.manual_seed(0)
    vis, ir = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    teacher = torch.maximum(vis, ir)
    loss = RFVIFLoss(teacher_weight=2.0)
    total_at, t_at = loss(teacher, [], vis, ir, teacher)
    _, t_avg = loss(0.5 * (vis + ir), [], vis, ir, teacher)
    assert t_at["teacher"] == 0.0 and t_avg["teacher"] > 0.1
    assert float(total_at) == pytest.approx(t_at["pixel"], rel=1e-5)
    assert RFVIFLoss()(vis, [], vis, ir)[1]["teacher"] == 0.0  # paper loss: no teacher
    with pytest.raises(ValueError, match="teacher fusion"):
        loss(vis, [], vis, ir)
    with pytest.raises(ValueError, match="teacher_weight"):
        RFVIFLoss(teacher_weight=-1)


def test_fusion_objective_prefers_the_stronger_source_where_the_paper_loss_is_flat():
    """Eq. 16 with alpha = 0.5 scores max(VIS, IR) and the average alike (both lie between the sources); the
    "fusion" objective prefers the max, which keeps a hot target as bright as in the IR."""
    from alignfuse.losses.rfvif import RFVIFLoss

    vis = torch.full((1, 1, 32, 32), 0.3)
    ir = vis.clone()
    ir[..., 8:20, 10:22] = 0.9  # a hot target the visible image does not show
    hot, average = torch.maximum(vis, ir), 0.5 * (vis + ir)
    paper = RFVIFLoss()
    assert paper(hot, [], vis, ir)[1]["pixel"] == pytest.approx(paper(average, [], vis, ir)[1]["pixel"])
    fusion = RFVIFLoss(objective="fusion")
    total_hot, terms_hot = fusion(hot, [], vis, ir)
    assert float(total_hot) < float(fusion(average, [], vis, ir)[0]) and terms_hot["perceptual"] == 0.0
    gap = lambda loss: float(loss(average, [], vis, ir)[0] - loss(hot, [], vis, ir)[0])  # noqa: E731
    intensity_gap = float((average - hot).abs().mean())  # the average misses the target by this much, the max not
    assert gap(RFVIFLoss(objective="fusion", fusion_int_weight=10.0)) - gap(fusion) == pytest.approx(9 * intensity_gap)
    with pytest.raises(ValueError, match="objective"):
        RFVIFLoss(objective="nope")
    with pytest.raises(ValueError, match="fusion_int_weight"):
        RFVIFLoss(objective="fusion", fusion_int_weight=-1.0)


def test_fusion_objective_metric_terms_add_what_they_say():
    """fusion_qabf_weight / fusion_sd_weight add w x (1 - Qabf) and w x SD shortfall (losses/pwf.py) to the fusion
    objective; an average of a flat visible image and a contrasted IR loses on both, the contrasted IR does not."""
    from alignfuse.losses.pwf import qabf, sd_shortfall
    from alignfuse.losses.rfvif import RFVIFLoss

    g = torch.Generator().manual_seed(0)
    vis = 0.3 + 0.05 * torch.rand(1, 1, 32, 32, generator=g)
    ir = torch.rand(1, 1, 32, 32, generator=g)
    average = 0.5 * (vis + ir)
    base = RFVIFLoss(objective="fusion")
    both = RFVIFLoss(objective="fusion", fusion_qabf_weight=2.0, fusion_sd_weight=5.0)
    added = float(both(average, [], vis, ir)[0] - base(average, [], vis, ir)[0])
    expected = 2.0 * float(1 - qabf(average, ir, vis)[0]) + 5.0 * float(sd_shortfall(average, ir, vis)[0])
    assert added == pytest.approx(expected, rel=1e-4) and expected > 0
    assert float(sd_shortfall(ir, ir, vis)[0]) == 0.0
    with pytest.raises(ValueError, match="fusion_sd_weight"):
        RFVIFLoss(objective="fusion", fusion_sd_weight=-1.0)


def test_fast_config_drops_only_full_resolution_msrbs():
    fast, cpu = RFVIF_CONFIGS["fast"], RFVIF_CONFIGS["cpu"]
    assert fast.msrb_blocks == (0, 1, 1) and replace(fast, msrb_blocks=cpu.msrb_blocks) == cpu
    _, macs_fast = count_params_and_macs(RFVIF("fast"), (96, 128))
    _, macs_cpu = count_params_and_macs(RFVIF("cpu"), (96, 128))
    assert macs_fast < 0.5 * macs_cpu
    out = RFVIF("fast").eval()(torch.rand(1, 1, 33, 51), torch.rand(1, 1, 33, 51))
    assert out.fused.shape == (1, 1, 33, 51)


def test_vis_skip_config_and_full_resolution_detail():
    """`fast-skip` = `fast` + the full-resolution visible skip (an extension, off in the paper config). Every
    other path reaches the output through H/2 features, so a tiny net asked to reproduce fine visible texture
    (identity task, same budget) gets much closer with the skip."""
    skip = RFVIF_CONFIGS["fast-skip"]
    assert skip.vis_skip and replace(skip, vis_skip=False) == RFVIF_CONFIGS["fast"]
    assert not RFVIF_CONFIGS["paper"].vis_skip and not RFVIF_CONFIGS["cpu"].vis_skip
    g = torch.Generator().manual_seed(0)
    vis = (torch.rand(4, 1, 32, 32, generator=g) > 0.5).float() * 0.6 + 0.2  # 1-px random texture
    ir = torch.rand(4, 1, 32, 32, generator=g)
    losses = {}
    for flag in (False, True):
        torch.manual_seed(0)
        net = RFVIF(replace(TINY, vis_skip=flag, msrb_blocks=(0, 1, 1)))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(60):
            opt.zero_grad()
            loss = (net(ir, vis).fused - vis).abs().mean()
            loss.backward()
            opt.step()
        losses[flag] = loss.item()
    assert losses[True] < 0.6 * losses[False], losses


def test_dilated_dynamic_conv_doubles_the_offset():
    x = torch.rand(1, 2, 12, 14)
    k = torch.zeros(1, 2, 3, 3)
    k[..., 1, 2] = 1.0  # dx = +1 tap
    out = dynamic_depthwise_conv2d(x, k, dilation=2)
    assert_close(out[..., :, :-2], x[..., :, 2:])
    assert (out[..., :, -2:] == 0).all()  # zero padding


def test_full_resolution_ir_path_shifts_by_twice_the_level1_offset():
    """A level-1 kernel that pulls from one H/2 pixel to the right pulls the full-resolution features two
    pixels to the right (after the [1, 2, 1] / 4 tent), through both FABs' kernels."""
    c = 3
    path = FullResolutionIRAlignment(c, num_fab=2, num_kernels=1)
    x = torch.rand(1, c, 16, 20)
    centre = torch.zeros(1, c, 3, 3)
    centre[..., 1, 1] = 1.0
    right = torch.zeros(1, c, 3, 3)
    right[..., 1, 2] = 1.0
    with torch.no_grad():
        still = path(x, [[centre], [centre]])
        moved = path(x, [[right], [centre]])
    # same tents and ReLUs, the second one on features moved by 2 px: equal away from the borders
    assert_close(moved[..., 3:-3, 3:-5], still[..., 3:-3, 5:-3])
    assert not torch.allclose(moved, still)


def _grown_skip_net(new_prefixes: tuple[str, ...], **option: bool) -> tuple[RFVIF, RFVIF]:
    """A small `fast-skip`-like net and the same net with ``option`` on, loaded from the first's weights: only the
    option's modules (``new_prefixes``) are missing. -> (base, grown), both in eval mode."""
    small = replace(TINY, msrb_blocks=(0, 1, 1), vis_skip=True)
    base = RFVIF(small).eval()
    grown = RFVIF(replace(small, **option)).eval()
    result = grown.load_state_dict(base.state_dict(), strict=False)
    assert not result.unexpected_keys and all(k.startswith(new_prefixes) for k in result.missing_keys)
    return base, grown


def test_ir_skip_warm_starts_as_the_skip_net_and_joins_the_alignment_loss():
    cfg = RFVIF_CONFIGS["fast-irskip"]
    assert cfg.ir_skip and replace(cfg, ir_skip=False) == RFVIF_CONFIGS["fast-skip"]
    with pytest.raises(ValueError, match="vis_skip"):
        replace(RFVIF_CONFIGS["fast"], ir_skip=True)
    base, grown = _grown_skip_net(("ir_path.",), ir_skip=True)
    ir, vis = _pair(1, 24, 32)
    with torch.no_grad():
        a, b = base(ir, vis), grown(ir, vis)
    assert_close(a.fused, b.fused)  # the zero gate: the grown net starts as the one it grew from
    assert len(b.aligned_ir) == 4 and b.aligned_ir[-1].shape[-2:] == (24, 32)
    # the full-resolution head is trained by the alignment loss, and the gate opens under the fusion loss
    grown.train()
    out = grown(ir, vis)
    (alignment_loss(out.aligned_ir, ir) + (out.fused - ir).abs().mean()).backward()
    assert grown.ir_path.head.weight.grad.abs().sum() > 0
    assert grown.ir_path.gate.weight.grad.abs().sum() > 0


def test_translate_reads_the_image_at_the_shifted_position():
    x = torch.rand(2, 1, 20, 24)
    shift = torch.tensor([[3.0, -2.0], [-1.5, 0.0]])
    y = translate(x, shift)
    assert_close(y[0, 0, 4:12, 4:12], x[0, 0, 2:10, 7:15])  # (x + 3, y - 2)
    assert_close(y[1, 0, :, 4:12], (x[1, 0, :, 2:10] + x[1, 0, :, 3:11]) / 2)  # half-pixel: bilinear


def test_shift_prior_starts_at_zero_warm_starts_as_the_skip_net_and_learns_a_known_shift():
    assert RFVIF_CONFIGS["fast-shift"] == replace(RFVIF_CONFIGS["fast-skip"], shift_prior=True)
    with pytest.raises(ValueError, match="vis_skip"):
        replace(RFVIF_CONFIGS["fast"], shift_prior=True)
    base, grown = _grown_skip_net(("shift.", "ir_gate."), shift_prior=True)
    ir, vis = _pair(2, 32, 40)
    with torch.no_grad():
        a, b = base(ir, vis), grown(ir, vis)
    assert a.shift is None and b.shift.shape == (2, 2) and float(grown.shift.gain) == 0.0
    assert_close(a.fused, b.fused, atol=1e-6, rtol=0)  # zero shift gain and zero gate: the same net
    fused, aligned = b  # still unpacks as (fused, aligned_ir)
    assert fused is b.fused and aligned is b.aligned_ir

    # the estimator finds a known shift across a contrast inversion (IR = 1 - VIS, shifted), and its sharpness
    # takes gradients from the supervision
    est = GlobalShiftEstimator()
    big = F.avg_pool2d(torch.rand(6, 1, 112, 112), 5, 1, 2)
    d = torch.tensor([[5, -3], [-7, 2], [0, 0], [3, 8], [-8, -8], [1, -6]])
    vis = big[..., 12:100, 12:100]
    ir = 1.0 - torch.stack([big[i, :, 12 + dy:100 + dy, 12 + dx:100 + dx] for i, (dx, dy) in enumerate(d.tolist())])
    err = (est(ir, vis) + d.float()).abs()  # ir(p) = vis(p + d): it is read at p - d
    assert float(err.max()) < 0.75, err
    err.mean().backward()
    assert est.log_sharpness.grad is not None and float(est.log_sharpness.grad.abs()) > 0


# ------------------------------------------------------------------------- pyramid head (extension)


def _pyr_net() -> RFVIF:
    return RFVIF(replace(TINY, msrb_blocks=(0, 1, 1), vis_skip=True, shift_prior=True, pyramid_head=True)).eval()


def test_pyramid_head_config_validation_and_named_config():
    cfg = RFVIF_CONFIGS["fast-shift-pyr"]
    assert cfg == replace(RFVIF_CONFIGS["fast-shift"], pyramid_head=True)
    assert not RFVIF_CONFIGS["paper"].pyramid_head and not RFVIF_CONFIGS["fast-shift"].pyramid_head
    with pytest.raises(ValueError, match="shift_prior"):
        replace(RFVIF_CONFIGS["fast-skip"], pyramid_head=True)
    assert RFVIFConfig.from_dict(cfg.to_dict()) == cfg
    net = RFVIF("fast-shift-pyr")
    assert hasattr(net, "pyr_head") and not hasattr(RFVIF("fast-shift"), "pyr_head")


@pytest.mark.parametrize("size", [(37, 53), (9, 15), (64, 48)])
def test_pyramid_head_output_shape_and_range_any_size(size):
    net = _pyr_net()
    net.shift.gain.fill_(1.0)
    ir, vis = _pair(2, *size)
    with torch.no_grad():
        out = net(ir, vis)
    assert out.fused.shape == (2, 1, *size) and len(out.aligned_ir) == 3 and out.shift.shape == (2, 2)
    assert float(out.fused.min()) >= 0.0 and float(out.fused.max()) <= 1.0


def test_pyramid_head_is_the_visible_image_at_zero_ir_weight_and_the_ir_at_one():
    net = _pyr_net()  # shift gain 0: the IR is not moved
    ir, vis = (0.4 + 0.2 * t for t in _pair(1, 40, 56))  # no clamping in the mixed case below
    with torch.no_grad():
        net.pyr_beta.zero_()  # no contrast term: the weights are the head's alone
        net.pyr_head[2].bias.fill_(-60.0)  # all IR weights ~0
        assert_close(net(ir, vis).fused, vis, atol=1e-5, rtol=0)
        net.pyr_head[2].bias.fill_(60.0)  # all ~1
        assert_close(net(ir, vis).fused, ir, atol=1e-5, rtol=0)
        # a zero weight on the fine bands only: the IR's coarse content with the visible image's finest detail
        net.pyr_head[2].bias.copy_(torch.tensor([-60.0, 60.0, 60.0, 60.0, 60.0]))
        out = net(ir, vis).fused
        b_ir, b_vis = laplacian_bands(ir, 5), laplacian_bands(vis, 5)
        assert_close(out, reconstruct_bands([b_vis[0], *b_ir[1:]]), atol=1e-5, rtol=0)
        assert (out - ir).abs().mean() > 0.01 and (out - vis).abs().mean() > 0.01


def test_pyramid_head_warm_starts_from_shift_weights_and_learns():
    base = RFVIF(replace(TINY, msrb_blocks=(0, 1, 1), vis_skip=True, shift_prior=True))
    net = _pyr_net().train()
    result = net.load_state_dict(base.state_dict(), strict=False)
    assert not result.unexpected_keys and all(k.startswith("pyr_") for k in result.missing_keys)
    ir, vis = _pair(2, 32, 40)
    loss = RFVIFLoss(objective="fusion")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = None
    for _ in range(3):
        out = net(ir, vis)
        total = loss(out.fused, out.aligned_ir, vis, ir)[0]
        first = float(total.detach()) if first is None else first
        opt.zero_grad()
        total.backward()
        assert net.pyr_head[2].weight.grad.abs().sum() > 0 and net.pyr_log_gain.grad.abs().sum() > 0
        opt.step()
    assert net.recon[0].weight.grad.abs().sum() > 0  # once the zero-initialised logits move, the features learn
    assert float(total.detach()) < first


def test_pyramid_recipe_grows_the_head_on_shift_weights(tmp_path):
    """The cpu-pyramid recipe builds the named config; a `fast-shift`-like export warm-starts a pyramid-head net
    (every shared parameter loads unchanged at lr 0, the pyr_* ones start fresh); the reverse is refused."""
    from pathlib import Path

    from alignfuse import checkpoints
    from alignfuse.training.recipes import RECIPES, TrainArgs, run_recipe

    assert RECIPES["rfvif"]["cpu-pyramid"]["net"] == "fast-shift-pyr"
    samples = Path(__file__).resolve().parents[1] / "samples"
    shift = "vis_skip=true,shift_prior=true"
    run_recipe(TrainArgs("rfvif", samples, None, "tiny", tmp_path / "a", overrides={"steps": 1, "variant": shift},
                         progress=False))
    run_recipe(TrainArgs("rfvif", samples, None, "tiny", tmp_path / "b", overrides={
        "steps": 1, "lr": 0.0, "variant": f"{shift},pyramid_head=true", "init": str(tmp_path / "a" / "export")},
        progress=False))
    start, _ = checkpoints.load_weights(tmp_path / "a" / "export", architecture="rfvif")
    grown, meta = checkpoints.load_weights(tmp_path / "b" / "export", architecture="rfvif")
    params = [k for k in start if "running_" not in k and "num_batches_tracked" not in k]
    assert meta["config"]["pyramid_head"] and all(torch.equal(start[k], grown[k]) for k in params)
    assert {k for k in grown if k.startswith("pyr_")} >= {"pyr_beta", "pyr_log_gain", "pyr_head.2.weight"}
    with pytest.raises(ValueError, match="holds config"):
        run_recipe(TrainArgs("rfvif", samples, None, "tiny", tmp_path / "c", overrides={
            "steps": 1, "variant": shift, "init": str(tmp_path / "b" / "export")}, progress=False))
