"""Field convention, warping utilities and misalignment synthesis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alignfuse import synth, warp


def _texture(h: int = 64, w: int = 80, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(rng.random((h, w)), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    return torch.from_numpy(img.astype(np.float32))[None, None]


def test_warp_convention_integer_shift():
    img = _texture()
    field = torch.zeros(1, 2, *img.shape[-2:])
    field[:, 0], field[:, 1] = 3.0, -2.0  # aligned[y, x] = moving[y - 2, x + 3]
    out = warp.warp(img, field)
    assert torch.allclose(out[0, 0, 2:, :-3], img[0, 0, :-2, 3:], atol=1e-5)


def test_warp_rejects_bad_shapes():
    with pytest.raises(ValueError, match="field must have shape"):
        warp.warp(_texture(), torch.zeros(1, 3, 64, 80))
    with pytest.raises(ValueError, match="differ"):
        warp.warp(_texture(), torch.zeros(1, 2, 60, 80))


def test_field_from_affine_translation_and_rotation():
    m = torch.tensor([[[1.0, 0.0, 4.0], [0.0, 1.0, -1.5]]])
    f = warp.field_from_affine(m, 10, 12)
    assert torch.allclose(f[:, 0], torch.full((1, 10, 12), 4.0))
    assert torch.allclose(f[:, 1], torch.full((1, 10, 12), -1.5))
    # 90 degree rotation about the origin: (x, y) -> (-y, x)
    r = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]]])
    fr = warp.field_from_affine(r, 5, 5)
    assert fr[0, 0, 2, 3].item() == pytest.approx(-2 - 3)  # x' - x = -y - x
    assert fr[0, 1, 2, 3].item() == pytest.approx(3 - 2)  # y' - y = x - y


def test_compose_matches_sequential_warps():
    img = _texture()
    a = torch.zeros(1, 2, 64, 80)
    a[:, 0] = 2.0
    b = torch.zeros(1, 2, 64, 80)
    b[:, 1] = -3.0
    seq = warp.warp(warp.warp(img, a), b)
    one = warp.warp(img, warp.compose(a, b))
    assert torch.allclose(seq[..., 4:-4, 4:-4], one[..., 4:-4, 4:-4], atol=1e-5)


def test_resize_field_scales_values():
    f = torch.ones(1, 2, 33, 41) * 2.0
    g = warp.resize_field(f, (65, 81))
    assert g.shape == (1, 2, 65, 81)
    assert torch.allclose(g[:, 0], torch.full_like(g[:, 0], 4.0))
    assert torch.allclose(g[:, 1], torch.full_like(g[:, 1], 4.0))


def test_invert_smooth_field():
    rng = np.random.default_rng(1)
    spec = synth.parse_preset("umf")
    d = torch.from_numpy(synth.sample_distortion(spec, 64, 80, rng))[None]
    g = warp.invert(d)
    residual = (warp.warp(d, g) + g).abs().max().item()
    assert residual < 1e-3


def test_folding_fraction():
    assert warp.folding_fraction(torch.zeros(1, 2, 16, 16)).item() == 0.0
    fold = torch.zeros(1, 2, 16, 16)
    fold[:, 0] = -2.0 * torch.arange(16.0).view(1, 16)  # x -> -x: orientation flips everywhere
    assert warp.folding_fraction(fold).item() == 1.0


# ---------------------------------------------------------------------------------------- synthesis
def test_parse_presets():
    assert synth.parse_preset("umf").elastic
    assert synth.parse_preset("shift:5").shift == 5
    assert synth.parse_preset("custom:rot=5,tx=3,elastic=0").rotation_deg == 5.0
    assert synth.parse_preset("custom:sigma=8").elastic  # an elastic parameter switches elastic on
    for bad in ("shift:x", "nope", "custom:foo=1", "shift:-1", "custom:sigma=0", "custom:scale=1.0",
                "custom:kernel=0", "custom:rot=-3"):
        with pytest.raises(ValueError):
            synth.parse_preset(bad)


@pytest.mark.parametrize("preset", ["umf", "large", "custom:rot=4,tx=6,scale=0.05,elastic=1"])
def test_warp_back_with_ground_truth_reproduces_image(preset):
    ir = _texture(96, 128, 3)[0, 0].numpy()
    s = synth.synthesise_pair(ir, ir, synth.parse_preset(preset), synth.pair_rng(0, "x"))
    assert s.stats["inverse_residual_px"] < 1e-3
    back = warp.warp(torch.from_numpy(s.ir_warp)[None, None], torch.from_numpy(s.field)[None])[0, 0].numpy()
    # only resampling blur remains: two bilinear passes on a smooth texture
    err = np.abs(back - s.ir_gt)[s.valid].mean()
    before = np.abs(s.ir_warp - s.ir_gt)[s.valid].mean()
    assert err < 0.01
    assert err < 0.25 * before


def test_shift_protocol_is_exact_crop():
    ir = _texture(40, 50)[0, 0].numpy()
    vis = np.stack([ir] * 3, axis=-1)
    s = synth.synthesise_pair(ir, vis, synth.parse_preset("shift:5"), synth.pair_rng(0, "x"))
    assert s.ir_warp.shape == s.ir_gt.shape == (35, 45)
    assert s.vis.shape == (35, 45, 3)
    assert np.array_equal(s.ir_warp, ir[5:, 5:]) and np.array_equal(s.ir_gt, ir[:35, :45])
    back = warp.warp(torch.from_numpy(s.ir_warp)[None, None], torch.from_numpy(s.field)[None])[0, 0].numpy()
    assert np.abs(back - s.ir_gt)[s.valid].max() < 1e-5
    assert s.valid[:, :5].sum() == 0 and s.valid[5:, 5:].all()


def test_umf_magnitude_matches_official_generator():
    # spec §2: at 256x256 the official affine+elastic field has mean |d| ~ 2.45 px
    spec = synth.parse_preset("umf")
    means = [np.sqrt((synth.sample_distortion(spec, 256, 256, synth.pair_rng(s, "m")) ** 2).sum(0)).mean()
             for s in range(6)]
    assert 1.5 < float(np.mean(means)) < 3.5


def test_large_preset_is_large():
    spec = synth.parse_preset("large")
    mags = [np.sqrt((synth.sample_distortion(spec, 240, 320, synth.pair_rng(s, "m")) ** 2).sum(0)).mean()
            for s in range(6)]
    assert float(np.mean(mags)) > 8.0


def test_same_seed_same_field_other_seed_differs():
    spec = synth.parse_preset("umf")
    a = synth.sample_distortion(spec, 32, 48, synth.pair_rng(7, "p"))
    b = synth.sample_distortion(spec, 32, 48, synth.pair_rng(7, "p"))
    c = synth.sample_distortion(spec, 32, 48, synth.pair_rng(8, "p"))
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


def test_normalised_grids_and_pixel_fields_sample_the_same_values():
    """The MIND registrar's normalised affine grids and warp()'s pixel fields: one convention (warp.py)."""
    from alignfuse import warp as w

    img = torch.rand(1, 1, 37, 53, dtype=torch.float64)
    theta = torch.tensor([[[1.02, 0.05, 0.03], [-0.04, 0.97, -0.02]]], dtype=torch.float64)
    grid = w.affine_grid(theta, (37, 53))
    a = w.sample_grid(img, grid)
    b = w.warp(img, w.grid_to_field(grid))
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))  # borders: zero vs replicate conventions
    assert torch.allclose(a[inner], b[inner], atol=1e-9)
    # and a pure pixel shift in grid units is that many pixels in the field
    shift = w.affine_grid(torch.eye(2, 3, dtype=torch.float64)[None], (37, 53)) + (
        torch.tensor([3.0, -2.0], dtype=torch.float64).view(1, 2, 1, 1) * w.pixel_to_grid_scale((37, 53), img)
    ).permute(0, 2, 3, 1)
    f = w.grid_to_field(shift)
    assert torch.allclose(f[:, 0], torch.full_like(f[:, 0], 3.0)) and torch.allclose(f[:, 1], torch.full_like(f[:, 1], -2.0))


def test_field_from_matrix_matches_affine_and_homography():
    from alignfuse import warp as w

    m = torch.tensor([[[1.1, 0.02, 3.0], [-0.01, 0.95, -2.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    assert torch.allclose(w.field_from_matrix(m, 20, 30), w.field_from_affine(m[:, :2], 20, 30))
    m[0, 2, 0] = 1e-3
    f = w.field_from_matrix(m, 20, 30)
    x, y = 7.0, 11.0
    q = m[0] @ torch.tensor([x, y, 1.0], dtype=torch.float64)
    assert torch.allclose(f[0, :, 11, 7], q[:2] / q[2] - torch.tensor([x, y], dtype=torch.float64))
