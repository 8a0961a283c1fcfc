"""UMF-CMGR networks: CPSTN, MRRN, U-Net registrar, DIFN (shapes on odd sizes, init, training direction)."""

from __future__ import annotations

import pytest
import torch
from kornia.filters import gaussian_blur2d

from alignfuse.losses.registration import RegistrationLoss
from alignfuse.models.cpstn import (
    CPSTNTranslator,
    ImagePool,
    PatchDiscriminator,
    ResnetGenerator,
    build_cpstn,
    init_weights,
)
from alignfuse.models.difn import DIFN, build_difn, conv_of_concat
from alignfuse.models.mrrn import MRRN, build_mrrn, build_unet_registrar, convert_official_mrrn_state_dict
from alignfuse.stages import Fuser, RegistrationResult, Translator
from alignfuse.warp import warp

ODD_SIZES = [(37, 53), (33, 51)]




def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_official_parameter_counts():
    """Faithful widths reproduce the spec §5 counts (11.372 M, 2.763 M, 0.171 M, 0.629 M)."""
    assert n_params(ResnetGenerator(3, 1, 64, 9)) == 11_371_905
    assert n_params(PatchDiscriminator(1, 64, 3)) == 2_762_689
    assert n_params(build_mrrn("paper")) == 170_904
    assert n_params(build_difn("paper")) == 629_253


# ----------------------------------------------------------------------------------- CPSTN


@pytest.mark.parametrize("size", ODD_SIZES)
@pytest.mark.parametrize("vis_ch", [1, 3])
def test_cpstn_translator_shapes_and_range(size, vis_ch):
    gen = init_weights(ResnetGenerator(3, 1, ngf=4, n_blocks=1), generator=torch.Generator().manual_seed(0))
    tr = CPSTNTranslator(gen)
    assert isinstance(tr, Translator)
    out = tr(torch.rand(2, vis_ch, *size))
    assert out.shape == (2, 1, *size)
    assert out.min() >= 0 and out.max() <= 1


def test_cpstn_translator_grey_generator_and_replicate():
    tr = CPSTNTranslator(ResnetGenerator(1, 1, ngf=4, n_blocks=1), pad_mode="replicate")
    assert tr(torch.rand(1, 3, 9, 7)).shape == (1, 1, 9, 7)
    with pytest.raises(ValueError):
        ResnetGenerator(1, 1, ngf=4, n_blocks=1)(torch.rand(1, 1, 10, 12))  # not a multiple of 4


def test_cpstn_nets_and_discriminator():
    nets = build_cpstn({"ngf": 4, "n_blocks": 1, "ndf": 4})
    a, b = torch.rand(1, 3, 64, 64) * 2 - 1, torch.rand(1, 1, 64, 64) * 2 - 1
    fake_b = nets.g_a(a)
    assert fake_b.shape == (1, 1, 64, 64) and fake_b.abs().max() <= 1
    assert nets.g_b(b).shape == (1, 3, 64, 64)
    assert nets.d_a(fake_b).shape == (1, 1, 6, 6)  # 256 -> 30, 64 -> 6
    assert nets.d_b(a).shape == (1, 1, 6, 6)
    # CycleGAN key layout, so official checkpoints load without renaming (1 block: 11 = first ConvTranspose)
    keys = set(nets.g_a.state_dict())
    assert {"model.1.weight", "model.10.conv_block.1.weight", "model.11.weight"} <= keys


def test_image_pool():
    pool = ImagePool(2, generator=torch.Generator().manual_seed(0))
    x = torch.arange(3.0).view(3, 1, 1, 1)
    out = pool.query(x)  # fills 2, then the 3rd is returned or swapped
    assert out.shape == x.shape and len(pool.images) == 2
    assert torch.equal(out[:2], x[:2])
    assert ImagePool(0).query(x) is x


# ------------------------------------------------------------------------------------ MRRN


@pytest.mark.parametrize("size", ODD_SIZES)
def test_mrrn_shapes_and_zero_init(size):
    torch.manual_seed(0)
    net = build_mrrn("tiny")
    fixed, moving = torch.rand(2, 1, *size), torch.rand(2, 1, *size)
    out = net(fixed, moving)
    h, w = size
    assert out["aligned"].shape == (2, 1, h, w)
    assert out["field"].shape == (2, 2, h, w)
    assert out["field_half"].shape == (2, 2, (h + 1) // 2, (w + 1) // 2)
    assert out["field_quarter"].shape == (2, 2, (h + 3) // 4, (w + 3) // 4)
    assert out["field"].abs().max() < 1e-3  # flow heads start at ~0 (VoxelMorph init)
    torch.testing.assert_close(out["aligned"], moving, atol=1e-3, rtol=0)
    torch.testing.assert_close(out["fixed_warped_back"], warp(fixed, -out["field"]))


def test_mrrn_paper_width_and_options():
    net = MRRN(upfeat_quirk=False)  # defaults = official widths
    assert n_params(net) == n_params(build_mrrn("paper"))
    out = net(torch.rand(1, 1, 33, 51), torch.rand(1, 1, 33, 51))
    assert out["field"].shape == (1, 2, 33, 51)
    assert {"enc.0.main.weight", "conv1_0.main.weight", "dc_conv2_2.0.weight", "predict_flow1b.bias"} <= set(
        net.state_dict()
    )
    res = net.register(torch.rand(1, 1, 16, 20), torch.rand(1, 1, 16, 20))
    assert isinstance(res, RegistrationResult) and res.field.shape == (1, 2, 16, 20)


def test_mrrn_loads_official_layout():
    """Official checkpoints hold every decoder module twice (also as enc.6+) plus grid buffers."""
    src = MRRN()
    official = dict(src.state_dict())
    decoder = [k for k in official if not k.startswith("enc.")]
    for i, key in enumerate(decoder):
        official[f"enc.{6 + i // 2}.{key.split('.', 1)[1]}"] = official[key]
    official["spatial_transform.grid"] = torch.zeros(1, 2, 256, 256)
    dst = MRRN()
    dst.load_state_dict(convert_official_mrrn_state_dict({"net": official}), strict=True)
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(dst(x, x)["field"], src(x, x)["field"])


def test_mrrn_learns_known_shift_in_right_direction():
    """30 Adam steps with the L1 similarity on a smooth toy pair with a +2 px x-shift reduce the EPE."""
    torch.manual_seed(0)
    h = w = 40
    noise = torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(1))
    fixed = gaussian_blur2d(noise, (13, 13), (3.0, 3.0), border_type="reflect")
    fixed = (fixed - fixed.min()) / (fixed.max() - fixed.min())
    shift = torch.zeros(1, 2, h, w)
    shift[:, 0] = -2.0
    moving = warp(fixed, shift)  # moving[y, x] = fixed[y, x - 2]  =>  ideal field dx = +2, dy = 0
    true = torch.zeros(1, 2, h, w)
    true[:, 0] = 2.0

    def epe(field: torch.Tensor) -> float:
        return float((field - true)[..., 4:-4, 4:-4].norm(dim=1).mean())

    net = build_mrrn("tiny")
    loss_fn = RegistrationLoss(similarity="l1", lambda_smooth=0.1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    with torch.no_grad():
        epe0 = epe(net(fixed, moving)["field"])
    for _ in range(30):
        out = net(fixed, moving)
        loss, _ = loss_fn(fixed, moving, out)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        field = net(fixed, moving)["field"]
    assert epe0 == pytest.approx(2.0, abs=0.01)
    assert epe(field) < 0.5 * epe0
    assert float(field[:, 0, 4:-4, 4:-4].mean()) > 1.0  # moved towards +dx, the right direction


@pytest.mark.parametrize("size", ODD_SIZES)
def test_unet_registrar_shapes_and_zero_init(size):
    torch.manual_seed(0)
    net = build_unet_registrar("tiny")
    fixed, moving = torch.rand(1, 1, *size), torch.rand(1, 1, *size)
    out = net(fixed, moving)
    assert out["field"].shape == (1, 2, *size) and out["aligned"].shape == (1, 1, *size)
    assert out["field"].abs().max() < 1e-3
    torch.testing.assert_close(out["aligned"], moving, atol=1e-3, rtol=0)
    out["aligned"].sum().backward()
    assert net.flow.weight.grad is not None


# ------------------------------------------------------------------------------------ DIFN


@pytest.mark.parametrize("size", ODD_SIZES)
@pytest.mark.parametrize(
    "nfeats,ifm,act", [(16, "official", "sigmoid"), (64, "official", "tanh01"), (8, "paper", "tanh_clip")]
)
def test_difn_shapes_and_range(size, nfeats, ifm, act):
    net = DIFN(nfeats=nfeats, ifm=ifm, out_act=act)
    assert isinstance(net, Fuser)
    ir, vis = torch.rand(1, 1, *size), torch.rand(1, 1, *size)
    fused = net(ir, vis * 10.0)  # out-of-range input still gives [0, 1]
    assert fused.shape == (1, 1, *size)
    assert fused.min() >= 0 and fused.max() <= 1


def test_difn_ifm_takes_nfeats_and_backprops():
    net = build_difn("cpu", growth=4, n_dense=2)
    assert net.fuse.query_conv.in_channels == 16  # the official code hard-wires 64 here
    net(torch.rand(1, 1, 12, 10), torch.rand(1, 1, 12, 10)).mean().backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("ifm,growth", [("official", None), ("paper", 5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_difn_inference_path_equals_concatenation(ifm, growth, channels_last):
    # without autograd DIFN sums per-piece convolutions instead of concatenating; same numbers
    torch.manual_seed(0)
    net = DIFN(nfeats=6, growth=growth, ifm=ifm).eval()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    ir, vis = torch.rand(2, 1, 13, 17), torch.rand(2, 1, 13, 17)
    with torch.no_grad():
        fast = net(ir, vis)
    with torch.enable_grad():
        reference = net(ir, vis)
    assert reference.requires_grad and not fast.requires_grad
    torch.testing.assert_close(fast, reference.detach(), atol=1e-6, rtol=0)


def test_conv_of_concat_matches_and_checks():
    torch.manual_seed(0)
    pieces = [torch.rand(1, 3, 9, 8), torch.rand(1, 2, 9, 8)]
    for conv in (torch.nn.Conv2d(5, 4, 3, padding=1), torch.nn.Conv2d(5, 4, 1, bias=False)):
        with torch.no_grad():
            torch.testing.assert_close(conv_of_concat(pieces, conv), conv(torch.cat(pieces, 1)), atol=1e-6, rtol=0)
    with torch.no_grad(), pytest.raises(ValueError, match="channels"):
        conv_of_concat([pieces[0], pieces[0]], torch.nn.Conv2d(5, 4, 3, padding=1))
    strided = torch.nn.Conv2d(5, 4, 3, stride=2, padding=1, padding_mode="reflect")  # falls back to the concatenation
    with torch.no_grad():
        torch.testing.assert_close(conv_of_concat(pieces, strided), strided(torch.cat(pieces, 1)))


# ------------------------------------------------------------------------------ determinism


def test_cpu_determinism():
    def run(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        x = torch.rand(1, 1, 20, 24)
        y = torch.rand(1, 1, 20, 24)
        mrrn = build_mrrn("tiny")
        difn = DIFN(nfeats=4)
        gen = init_weights(ResnetGenerator(1, 1, 4, 1), generator=torch.Generator().manual_seed(seed))
        return [mrrn(x, y)["field"], difn(x, y), CPSTNTranslator(gen)(x)]

    for a, b in zip(run(3), run(3)):
        assert torch.equal(a, b)
    assert not torch.equal(run(3)[1], run(4)[1])


def test_correlation_volume_peaks_at_the_true_offset():
    from alignfuse.models.mrrn import correlation_volume

    torch.manual_seed(0)
    f = torch.randn(1, 4, 12, 12)
    m = torch.roll(f, shifts=(1, -2), dims=(2, 3))  # m[y + 1, x - 2] = f[y, x]
    vol = correlation_volume(f, m, radius=3)
    assert vol.shape == (1, 49, 12, 12)
    assert int(vol[0, :, 6, 6].argmax()) == (1 + 3) * 7 + (-2 + 3)
    assert float(vol[0, :, 6, 6].max()) == pytest.approx(1.0, abs=1e-5)  # normalised features


def test_corr_cost_mrrn_runs_on_odd_sizes_and_rejects_unknown_cost():
    net = build_mrrn("cpu-corr")
    out = net(torch.rand(1, 1, 57, 83), torch.rand(1, 1, 57, 83))
    assert out["field"].shape == (1, 2, 57, 83)
    assert net.config["cost"] == "corr" and net.conv2_0.__class__.__name__ == "_ConvBlock"
    with pytest.raises(ValueError, match="cost"):
        build_mrrn("tiny", cost="ncc")


def test_mind_input_mrrn_is_blind_to_contrast_inversion_of_the_reference():
    # inputs="mind": the extractor sees MIND descriptors, so an inverted (or re-gained) reference image
    # gives exactly the same field; an intensity-input MRRN does not have that property.
    torch.manual_seed(0)
    net = build_mrrn("tiny", inputs="mind", cost="corr", corr_radius=2)
    for p in net.parameters():  # non-trivial heads so the field depends on the inputs
        torch.nn.init.normal_(p, std=0.2)
    fixed = gaussian_blur2d(torch.rand(1, 1, 37, 53), (5, 5), (1.5, 1.5))
    moving = torch.roll(fixed, 2, dims=3)
    with torch.no_grad():
        out = net(fixed, moving)["field"]
        inverted = net(0.2 + 0.5 * (1 - fixed), moving)["field"]
    assert out.shape == (1, 2, 37, 53) and float(out.abs().max()) > 1e-3
    torch.testing.assert_close(inverted, out, atol=1e-4, rtol=1e-4)
    plain = build_mrrn("tiny", cost="corr", corr_radius=2)
    for p in plain.parameters():
        torch.nn.init.normal_(p, std=0.2)
    with torch.no_grad():
        assert float((plain(1 - fixed, moving)["field"] - plain(fixed, moving)["field"]).abs().max()) > 1e-3
    assert build_mrrn("cpu-mind").config["inputs"] == "mind"
    with pytest.raises(ValueError, match="inputs"):
        build_mrrn("tiny", inputs="vgg")
    with pytest.raises(ValueError, match="1-channel"):
        build_mrrn("tiny", inputs="mind", in_channels=3)


def test_mind_input_unet_registrar_runs_and_round_trips_its_config():
    net = build_unet_registrar("cpu-mind")
    assert net.config["inputs"] == "mind" and net.encoder[0][0].in_channels == 16
    with torch.no_grad():
        out = net(torch.rand(1, 1, 37, 53), torch.rand(1, 1, 37, 53))
    assert out["field"].shape == (1, 2, 37, 53)
    assert build_unet_registrar(net.config).config == net.config
    with pytest.raises(ValueError, match="inputs"):
        build_unet_registrar("tiny", inputs="rgb")


def test_cpstn_resize_upsampling_has_no_transposed_convolution():
    import torch

    from alignfuse.models.cpstn import CPSTN_CONFIGS, ResnetGenerator

    g = ResnetGenerator.from_config({**CPSTN_CONFIGS["tiny"], "upsample": "resize"}, 3, 1)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())
    assert g(torch.rand(1, 3, 24, 32)).shape == (1, 1, 24, 32)
    with pytest.raises(Exception, match="upsample"):
        ResnetGenerator(3, 1, 4, 1, upsample="bicubic")
