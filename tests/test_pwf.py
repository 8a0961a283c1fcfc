"""PWF fuser: the pyramid is exact, the blend stays within the sources, any size works; its loss; its recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignfuse.losses.pwf import PWFLoss
from alignfuse.models.pwf import build_pwf, laplacian_bands, reconstruct_bands


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (17, 31), (64, 48)])
def test_laplacian_bands_reconstruct_exactly(size):
    img = torch.rand(2, 1, *size)
    bands = laplacian_bands(img, 5)
    assert bands[0].shape == img.shape
    torch.testing.assert_close(reconstruct_bands(bands), img, atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (33, 20)])
def test_pwf_any_size_in_range(size):
    net = build_pwf("tiny").eval()
    out = net(torch.rand(1, 1, *size), torch.rand(1, 1, *size))
    assert out.fused.shape == (1, 1, *size)
    assert float(out.fused.min()) >= 0 and float(out.fused.max()) <= 1


def test_pwf_of_two_equal_images_is_that_image():
    """Every band is a convex blend of the two sources' bands (unit gains at initialisation)."""
    net = build_pwf("cpu").eval()
    img = torch.rand(1, 1, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(net(img, img).fused, img, atol=1e-5, rtol=0)


def test_pwf_prefers_the_source_with_the_detail():
    """The contrast term of the detail weights: a textured IR and a flat VIS keep the IR's texture."""
    net = build_pwf("cpu").eval()
    g = torch.Generator().manual_seed(0)
    ir = torch.rand(1, 1, 64, 64, generator=g)
    vis = torch.full_like(ir, 0.5)
    with torch.no_grad():
        fused = net(ir, vis).fused
    detail = lambda x: (x - x.mean()).std()  # noqa: E731
    assert float(detail(fused)) > 0.6 * float(detail(ir))


def test_pwf_loss_prefers_the_source_structure():
    ir, vis = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    loss = PWFLoss()
    good, terms = loss(torch.maximum(ir, vis), ir, vis)
    bad, _ = loss(torch.full_like(ir, 0.5), ir, vis)
    assert float(good) < float(bad) and set(terms) == {"loss", "ssim", "grad", "int"}


def _tiny_dataset(tmp_path):
    """Two random 48x48 IR / visible pairs in ``tmp_path/data/{ir,vi}`` -> the data folder."""
    import numpy as np

    from alignfuse import io

    data = tmp_path / "data"
    (data / "ir").mkdir(parents=True)
    (data / "vi").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        io.write_image(data / "ir" / f"p{i}.png", rng.random((48, 48)).astype(np.float32))
        io.write_image(data / "vi" / f"p{i}.png", rng.random((48, 48)).astype(np.float32))
    return data


def test_pwf_trains_and_exports(tmp_path):
    from pathlib import Path

    from alignfuse.learned_stages import load_pwf
    from alignfuse.training.recipes import TrainArgs, run_recipe

    data = _tiny_dataset(tmp_path)
    run_recipe(TrainArgs("pwf", data, None, "tiny", tmp_path / "run", progress=False))
    (tmp_path / "w").mkdir()
    for ext in ("safetensors", "json"):
        (tmp_path / "w" / f"pwf_cpu.{ext}").write_bytes((tmp_path / "run" / f"export.{ext}").read_bytes())
    net = load_pwf(Path(tmp_path / "w"))
    assert net(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)).fused.shape == (1, 1, 16, 16)


# --- issue 15 item 2: optional loss terms (w_rmse, w_qabf, w_sd, w_qcv, grad_gain), the cpu-edge recipe, warm start


def _eight_bit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g).float() / 255


def test_pwf_qabf_term_equals_the_vifb_metric():
    """The differentiable Qabf is VIFB's Qabf (validated against the MATLAB code) on 8-bit images."""
    from alignfuse.losses.pwf import qabf
    from alignfuse.metrics.fusion import compute_fusion_metrics

    ir, vis = _eight_bit(1, 1, 40, 52, seed=1), _eight_bit(1, 1, 40, 52, seed=2)
    smooth = torch.nn.functional.avg_pool2d(ir, 3, 1, 1)  # weaker edges than either source
    for fused in ((ir + vis) / 2, torch.maximum(ir, vis), smooth, 0.7 * ir + 0.3 * vis):
        fused = (fused * 255).round() / 255
        ref = compute_fusion_metrics(vis[0, 0].numpy(), ir[0, 0].numpy(), fused[0, 0].numpy(), ["Qabf"])["Qabf"]
        assert abs(float(qabf(fused, ir, vis)[0]) - ref) < 2e-3


def test_pwf_qabf_term_rewards_the_stronger_edges_and_has_finite_gradients():
    from alignfuse.losses.pwf import qabf

    ir, vis = torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32)
    ir[..., 10:20, 6:14] = 0.8  # an IR-only target on flat backgrounds
    vis[..., :, 20:] = 0.4  # a visible-only edge, away from it
    both = torch.maximum(ir, vis).requires_grad_(True)
    q = qabf(both, ir, vis)
    assert float(q.detach()) > 0.9 and float(qabf(0.5 * (ir + vis), ir, vis)) < float(q.detach())
    assert float(qabf(ir, ir, vis)) < float(q.detach())  # the visible edge lost
    q.sum().backward()
    assert torch.isfinite(both.grad).all() and float(both.grad.abs().sum()) > 0


def test_pwf_rmse_term_is_vifb_rmse_and_indifferent_to_a_constant_blend():
    from alignfuse.losses.pwf import rmse_term
    from alignfuse.metrics.fusion import compute_fusion_metrics

    ir, vis = _eight_bit(1, 1, 24, 30, seed=3), _eight_bit(1, 1, 24, 30, seed=4)
    fused = (0.3 * ir + 0.7 * vis).clamp(0, 1)
    ref = compute_fusion_metrics(vis[0, 0].numpy(), ir[0, 0].numpy(), fused[0, 0].numpy(), ["Rmse"])["Rmse"]
    n = ir.numel()
    assert abs(float(rmse_term(fused, ir, vis)[0]) / n**0.5 - ref) < 1e-6  # VIFB: ||S - F|| / N, mean of sources
    # any spatially constant blend reaches the same value; a varying blend (max) costs more
    values = [float(rmse_term(w * ir + (1 - w) * vis, ir, vis)) for w in (0.0, 0.25, 0.5, 1.0)]
    assert max(values) - min(values) < 1e-5
    assert float(rmse_term(torch.maximum(ir, vis), ir, vis)) > values[0] + 0.02


def test_pwf_loss_options_default_to_the_shipped_objective():
    ir, vis = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    fused = 0.6 * ir + 0.4 * vis
    base, terms = PWFLoss(w_grad=30.0)(fused, ir, vis)
    same, _ = PWFLoss(w_grad=30.0, w_rmse=0.0, w_qabf=0.0, grad_gain=1.0, w_sd=0.0, w_qcv=0.0)(fused, ir, vis)
    assert float(base) == float(same) and set(terms) == {"loss", "ssim", "grad", "int"}
    from alignfuse.losses.pwf import qabf, rmse_term

    from alignfuse.losses.pwf import qcv, sd_shortfall

    more, t2 = PWFLoss(w_grad=30.0, w_rmse=3.0, w_qabf=2.0, w_sd=4.0, w_qcv=0.5, qcv_ref=300)(fused, ir, vis)
    expect = (float(base) + 3.0 * float(rmse_term(fused, ir, vis).mean())
              + 2.0 * (1 - float(qabf(fused, ir, vis).mean())) + 4.0 * float(sd_shortfall(fused, ir, vis).mean())
              + 0.5 * float(qcv(fused, ir, vis, 300).mean()) / 1000)
    assert abs(float(more) - expect) < 1e-5 and {"rmse", "qabf", "sd", "qcv"} <= set(t2)


@pytest.mark.parametrize("shape", [(40, 52), (37, 45)])
def test_pwf_qcv_term_equals_the_vifb_metric(shape):
    """Within VIFB's rounding of the normalised images; odd sizes exercise the block padding and the CSF grid."""
    from alignfuse.losses.pwf import qcv
    from alignfuse.metrics.fusion import compute_fusion_metrics

    ir = (torch.nn.functional.avg_pool2d(_eight_bit(1, 1, *shape, seed=7), 3, 1, 1) * 255).round() / 255
    vis = _eight_bit(1, 1, *shape, seed=8)
    values = []
    for fused in ((ir + vis) / 2, torch.maximum(ir, vis), 0.8 * ir + 0.2 * vis):
        fused = (fused * 255).round() / 255
        ref = compute_fusion_metrics(vis[0, 0].numpy(), ir[0, 0].numpy(), fused[0, 0].numpy(), ["Qcv"])["Qcv"]
        values.append(float(qcv(fused.double(), ir.double(), vis.double())[0]))
        assert abs(values[-1] - ref) < 2e-3 * ref
    assert len(set(round(v) for v in values)) == 3  # it tells the blends apart


def test_pwf_qcv_term_is_zero_for_a_source_copy_and_has_gradients():
    from alignfuse.losses.pwf import qcv

    ir, vis = _eight_bit(2, 1, 32, 32, seed=9), _eight_bit(2, 1, 32, 32, seed=10)
    assert float(qcv(vis, vis, vis).max()) < 1e-6  # F equal to both sources: no difference anywhere
    fused = (0.5 * (ir + vis)).requires_grad_(True)
    value = qcv(fused, ir, vis, ref=400)
    value.sum().backward()
    assert float(value.min()) > 0 and torch.isfinite(fused.grad).all() and float(fused.grad.abs().sum()) > 0
    # a larger reference image moves the CSF's peak to lower frequencies of the crop: another value
    assert abs(float(qcv(fused, ir, vis, ref=400)[0]) - float(qcv(fused, ir, vis)[0])) > 1e-3


def test_pwf_sd_shortfall_is_the_missing_contrast_of_the_stronger_source():
    from alignfuse.losses.pwf import sd_shortfall

    g = torch.Generator().manual_seed(6)
    ir = torch.rand(1, 1, 20, 20, generator=g)  # SD ~0.29
    vis = 0.5 + 0.2 * (torch.rand(1, 1, 20, 20, generator=g) - 0.5)  # SD ~0.06
    sd_ir = float(ir.std(unbiased=False))
    assert abs(float(sd_shortfall(0.5 * ir + 0.25, ir, vis)) - 0.5 * sd_ir) < 1e-6  # half the IR's contrast
    assert float(sd_shortfall(ir, ir, vis)) == 0.0 and float(sd_shortfall(1.5 * ir, ir, vis)) == 0.0  # no reward above
    assert float(sd_shortfall(vis, ir, vis)) > float(sd_shortfall(0.8 * ir + 0.2 * vis, ir, vis))


def test_pwf_grad_gain_moves_the_best_edge_strength():
    """With VIS flat, the gradient term of F = c * IR is smallest at c = grad_gain."""
    ir = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(5))
    vis = torch.full_like(ir, 0.0)
    cs = [0.8, 1.0, 1.2, 1.4]
    for gain, best in ((1.0, 1.0), (1.2, 1.2)):
        loss = PWFLoss(w_ssim=0.0, w_int=0.0, w_grad=1.0, grad_gain=gain)
        values = [float(loss(c * ir, ir, vis)[0]) for c in cs]
        assert cs[values.index(min(values))] == best


def test_pwf_edge_recipe_warm_starts_from_an_export(tmp_path):
    """cpu-edge-style runs start from init's weights (lr 0: the export equals the init) and log the new terms."""
    import json

    from alignfuse import checkpoints
    from alignfuse.training.recipes import TrainArgs, run_recipe

    data = _tiny_dataset(tmp_path)
    run_recipe(TrainArgs("pwf", data, None, "tiny-edge", tmp_path / "a", progress=False))
    first, _ = checkpoints.load_weights(tmp_path / "a" / "export.safetensors", architecture="pwf")
    run_recipe(TrainArgs("pwf", data, None, "tiny-edge", tmp_path / "b", progress=False,
                         overrides={"init": str(tmp_path / "a" / "export.safetensors"), "lr": 0.0}))
    second, _ = checkpoints.load_weights(tmp_path / "b" / "export.safetensors", architecture="pwf")
    for k in first:
        torch.testing.assert_close(second[k], first[k], atol=0, rtol=0)
    scratch = build_pwf("tiny").state_dict()
    assert any(not torch.equal(first[k], scratch[k]) for k in first)  # a, trained with lr 1e-3, moved
    logged = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert {"rmse", "qabf", "sd", "qcv"} <= set(logged[-1])


def test_pwf_shipped_recipe_keeps_the_shipped_loss():
    from alignfuse.training.recipes import RECIPES

    cpu = RECIPES["pwf"]["cpu"]
    # the recipe the shipped weights came from: none of the new keys, so none of the new terms
    assert not {"w_rmse", "w_qabf", "grad_gain", "w_sd", "w_qcv", "qcv_ref", "init"} & set(cpu)
    edge = RECIPES["pwf"]["cpu-edge"]
    assert edge["net"] == cpu["net"] and edge["init"] == "shipped"


# --- the opt-in global branch (models/pwf.py, global_branch) ---

def _shipped_pwf(global_branch: bool = False):
    from alignfuse import checkpoints
    from alignfuse.learned_stages import weights_path
    from alignfuse.models.pwf import PWFNet

    state, meta = checkpoints.load_weights(weights_path("pwf", None), architecture="pwf")
    net = PWFNet(**meta["config"], global_branch=global_branch)
    missing, unexpected = net.load_state_dict(state, strict=not global_branch)
    assert not unexpected and all(k.startswith("glob.") for k in missing)
    return net.eval(), meta


@pytest.mark.skipif(not __import__("alignfuse.learned_stages", fromlist=["x"]).weights_available("pwf"),
                    reason="shipped PWF weights absent")
def test_pwf_shipped_weights_keep_their_config_and_have_no_branch():
    """The option is off by default: the shipped config has no global_branch key and loads strictly."""
    from alignfuse.learned_stages import load_pwf

    net = load_pwf(None)
    assert net.glob is None and "global_branch" not in net.config
    _, meta = _shipped_pwf()
    assert "global_branch" not in meta["config"]


@pytest.mark.skipif(not __import__("alignfuse.learned_stages", fromlist=["x"]).weights_available("pwf"),
                    reason="shipped PWF weights absent")
@pytest.mark.parametrize("size", [(1, 1), (37, 53), (96, 128)])
def test_pwf_global_branch_starts_as_the_net_without_it(size):
    """Zero-initialised last layer: the shipped weights in a net with the branch give the same output bit for bit."""
    plain, _ = _shipped_pwf(False)
    glob, _ = _shipped_pwf(True)
    g = torch.Generator().manual_seed(1)
    ir, vis = torch.rand(2, 1, *size, generator=g), torch.rand(2, 1, *size, generator=g)
    with torch.no_grad():
        a, b = plain(ir, vis), glob(ir, vis)
    assert torch.equal(a.fused, b.fused) and torch.equal(a.weights, b.weights)


def test_pwf_global_branch_is_tiny_gets_gradients_and_shifts_whole_bands():
    net = build_pwf({**dict(__import__("alignfuse.models.pwf", fromlist=["x"]).PWF_CONFIGS["cpu"]),
                     "global_branch": True})
    plain = build_pwf("cpu")
    extra = sum(p.numel() for p in net.parameters()) - sum(p.numel() for p in plain.parameters())
    assert 0 < extra < 1000
    g = torch.Generator().manual_seed(2)
    ir, vis = torch.rand(2, 1, 40, 48, generator=g), torch.rand(2, 1, 40, 48, generator=g)
    net(ir, vis).fused.mean().backward()
    last = net.glob[2]
    assert last.weight.grad is not None and float(last.weight.grad.abs().sum()) > 0
    assert float(last.bias.grad.abs().sum()) > 0
    # a non-zero branch: one per-image constant per band, so the logit maps move by that constant everywhere
    with torch.no_grad():
        last.bias.copy_(torch.arange(5, dtype=torch.float32) - 2.0)
        net.zero_grad()
        logits_on = net.predict_logits(ir, vis)
        last.bias.zero_()
        logits_off = net.predict_logits(ir, vis)
    diff = logits_on - logits_off
    torch.testing.assert_close(diff, (torch.arange(5.0) - 2.0).view(1, 5, 1, 1).expand_as(diff), atol=1e-5, rtol=0)
    # and all branch parameters learn once the last layer has moved
    net.zero_grad()
    with torch.no_grad():
        last.weight.normal_(0, 0.1)
    net(ir, vis).fused.mean().backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in net.glob.parameters())


def test_pwf_global_branch_image_statistics_depend_on_the_image_not_the_batch():
    """Per-image offsets: fusing a batch equals fusing each image alone (no statistic mixes images)."""
    net = build_pwf({"width": 4, "levels": 3, "dilations": (1, 2), "global_branch": True}).eval()
    with torch.no_grad():
        net.glob[2].weight.normal_(0, 0.5)
    g = torch.Generator().manual_seed(3)
    ir, vis = torch.rand(3, 1, 33, 41, generator=g), torch.rand(3, 1, 33, 41, generator=g)
    ir[1] *= 0.3
    with torch.no_grad():
        both = net(ir, vis).fused
        alone = torch.cat([net(ir[i:i + 1], vis[i:i + 1]).fused for i in range(3)])
        offsets = net.glob(torch.cat([torch.zeros(3, 8), __import__("alignfuse.models.pwf", fromlist=["x"])
                                      ._image_stats(torch.cat([ir, vis, ir, vis], 1)[..., ::2, ::2])], 1))
    torch.testing.assert_close(both, alone, atol=1e-6, rtol=0)
    assert float((offsets[0] - offsets[1]).abs().max()) > 0


def test_pwf_global_config_round_trips_and_warm_starts_from_weights_without_the_branch(tmp_path):
    """tiny-global from a tiny-edge export: lr 0 keeps every shared tensor and a zero branch; the export's config
    records global_branch and load_pwf rebuilds it (same output)."""
    import shutil

    from alignfuse import checkpoints
    from alignfuse.errors import UserError
    from alignfuse.learned_stages import load_pwf
    from alignfuse.training.recipes import TrainArgs, run_recipe

    data = _tiny_dataset(tmp_path)
    run_recipe(TrainArgs("pwf", data, None, "tiny-edge", tmp_path / "a", progress=False))
    init = str(tmp_path / "a" / "export.safetensors")
    run_recipe(TrainArgs("pwf", data, None, "tiny-global", tmp_path / "b", progress=False,
                         overrides={"init": init, "lr": 0.0}))
    first, meta_a = checkpoints.load_weights(tmp_path / "a" / "export.safetensors", architecture="pwf")
    second, meta_b = checkpoints.load_weights(tmp_path / "b" / "export.safetensors", architecture="pwf")
    assert "global_branch" not in meta_a["config"] and meta_b["config"]["global_branch"] is True
    assert set(second) - set(first) == {"glob.0.weight", "glob.0.bias", "glob.2.weight", "glob.2.bias"}
    for k in first:
        torch.testing.assert_close(second[k], first[k], atol=0, rtol=0)
    assert not second["glob.2.weight"].any() and not second["glob.2.bias"].any()
    # trained with the branch (lr > 0) -> export -> load_pwf: the same net, the same output
    run_recipe(TrainArgs("pwf", data, None, "tiny-global", tmp_path / "c", progress=False,
                         overrides={"init": init, "lr": 0.05}))
    for run, folder in (("a", "wa"), ("c", "wc")):
        (tmp_path / folder).mkdir()
        for ext in ("safetensors", "json"):
            shutil.copy(tmp_path / run / f"export.{ext}", tmp_path / folder / f"pwf_cpu.{ext}")
    trained, meta_c = checkpoints.load_weights(tmp_path / "c" / "export.safetensors", architecture="pwf")
    assert trained["glob.2.weight"].any()
    net_c, net_a = load_pwf(tmp_path / "wc"), load_pwf(tmp_path / "wa")
    assert net_c.config == meta_c["config"] and net_c.glob is not None
    ir, vis = torch.rand(1, 1, 30, 30), torch.rand(1, 1, 30, 30)
    with torch.no_grad():
        assert not torch.equal(net_c(ir, vis).fused, net_a(ir, vis).fused)
    # weights with the branch cannot seed a net without it
    with pytest.raises(UserError):
        run_recipe(TrainArgs("pwf", data, None, "tiny-edge", tmp_path / "d", progress=False,
                             overrides={"init": str(tmp_path / "c" / "export.safetensors")}))


# --- round-3 recipe options (training/data.py degrade_sources, swap_sources; losses/pwf.py hot_target_shortfall) ---

def _hot_crop(batch: int = 2, size: int = 64) -> torch.Tensor:
    ir = torch.full((batch, 1, size, size), 0.3)
    ir[:, :, 28:36, 28:36] = 0.9  # a warm target, 1.6 % of the crop
    return ir + 0.01 * torch.rand(batch, 1, size, size)


def test_hot_target_shortfall_measures_the_lost_target_contrast():
    from alignfuse.losses.pwf import hot_target_shortfall

    ir = _hot_crop()
    assert float(hot_target_shortfall(ir, ir)) == pytest.approx(0.0, abs=1e-6)  # as salient as in the IR
    flat = torch.full_like(ir, 0.5, requires_grad=True)
    lost = hot_target_shortfall(flat, ir)
    assert float(lost) == pytest.approx(1.0, abs=1e-3)  # the target is gone
    lost.backward()
    assert flat.grad is not None and flat.grad.abs().sum() > 0
    half = 0.3 + 0.5 * (ir - 0.3)
    assert float(hot_target_shortfall(half, ir)) == pytest.approx(0.5, abs=0.02)
    no_target = torch.full((2, 1, 64, 64), 0.4, requires_grad=True)  # no hot mask: zero, still differentiable
    zero = hot_target_shortfall(no_target, no_target.detach())
    assert float(zero) == 0.0 and zero.requires_grad


def test_degrade_and_swap_sources_change_what_they_say():
    from alignfuse.training.data import degrade_sources, swap_sources

    rng = np.random.default_rng(0)
    vis, ir = torch.rand(6, 1, 32, 32), torch.rand(6, 1, 32, 32)
    v0, i0 = degrade_sources(vis, ir, np.random.default_rng(0), 0.0)
    assert torch.equal(v0, vis) and torch.equal(i0, ir)
    v1, i1 = degrade_sources(vis, ir, rng, 1.0)
    for b in range(6):
        changed = [not torch.equal(v1[b], vis[b]), not torch.equal(i1[b], ir[b])]
        assert changed.count(True) == 1  # exactly one source per sample
        x, y = (vis[b], v1[b]) if changed[0] else (ir[b], i1[b])
        assert 0.2 < float(y.std() / x.std()) <= 0.71  # contrast kept by k in [0.25, 0.7]
        if changed[0]:
            assert float(y.mean()) <= float(x.mean()) + 1e-6  # a degraded visible crop is darker
        else:
            assert float(y.mean()) >= float(x.mean()) - 1e-6  # a degraded IR crop is washed out
    sv, si = swap_sources(vis, ir, np.random.default_rng(0), 1.0)
    assert torch.equal(sv, ir) and torch.equal(si, vis)
    sv, si = swap_sources(vis, ir, np.random.default_rng(0), 0.0)
    assert torch.equal(sv, vis) and torch.equal(si, ir)
