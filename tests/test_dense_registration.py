"""MIND instance-optimisation registrar: descriptor invariances, cross-modal recovery of known fields,
sign convention, odd sizes, batches, and safe behaviour on content-free input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from alignfuse import warp
from alignfuse.baselines import REGISTRARS
from alignfuse.baselines.dense import MINDRegistrar
from alignfuse.losses.mind import mind_descriptors, mind_distance
from alignfuse.stages import Registrar, RegistrationResult

from test_baselines import const_field, interior_error, textured

H, W = 96, 128


def _check(res: RegistrationResult, moving: torch.Tensor) -> None:
    b, _, h, w = moving.shape
    assert res.aligned.shape == moving.shape and res.field.shape == (b, 2, h, w)
    assert torch.isfinite(res.field).all() and len(res.diagnostics) == b
    torch.testing.assert_close(res.aligned, warp.warp(moving, res.field))


def test_descriptor_is_invariant_to_contrast_inversion_and_gain():
    img = torch.from_numpy(textured(0))[None, None]
    d = mind_descriptors(img)
    assert d.shape == (1, 8, H, W)
    assert float(d.min()) > 0.0 and float(d.max()) <= 1.0 + 1e-6
    torch.testing.assert_close(mind_descriptors(1.0 - img), d, atol=1e-5, rtol=0)
    torch.testing.assert_close(mind_descriptors(0.3 * img + 0.2), d, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        mind_descriptors(img[0])


def test_descriptor_follows_its_definition_at_a_pixel():
    """D_r at one interior pixel by hand (3x3 Gaussian-weighted squared differences to the pixel ``radius``
    away), then exp(-D / mean(D)) normalised by its maximum: what the vectorised code must compute."""
    img = torch.from_numpy(textured(3))[None, None].double()
    radius, sigma, y, x = 2, 0.8, 40, 57  # k = 2 * int(3 * 0.8) + 1 = 5 taps
    k = 2 * int(3 * sigma) + 1
    taps = torch.exp(-torch.arange(-(k // 2), k // 2 + 1, dtype=torch.float64) ** 2 / (2 * sigma**2))
    g = torch.outer(taps, taps) / taps.sum() ** 2
    dist = []
    for dx, dy in ((-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)):
        sq = (img[0, 0] - torch.roll(img[0, 0], (-dy * radius, -dx * radius), (0, 1))) ** 2
        dist.append((sq[y - k // 2 : y + k // 2 + 1, x - k // 2 : x + k // 2 + 1] * g).sum())
    dist = torch.stack(dist)
    expected = torch.exp(-dist / dist.mean())
    got = mind_descriptors(img, radius=radius, sigma=sigma)[0, :, y, x]
    torch.testing.assert_close(got, expected / expected.max(), atol=1e-6, rtol=0)


def test_registry_and_protocol():
    assert isinstance(REGISTRARS["mind"](), Registrar)
    assert REGISTRARS["mindaffine"]().deformable is False


def test_recovers_known_shift_across_contrast_inversion():
    """fixed = 1 - (moving shifted by (5, -3)): a cross-modal pair with inverted contrast. The field
    (sign included, aligned[p] = moving[p + field]) comes back within half a pixel."""
    moving = torch.from_numpy(textured(0))[None, None]
    gt = const_field(5.0, -3.0)
    fixed = 1.0 - warp.warp(moving, gt)
    res = MINDRegistrar(long_side=128)(moving, fixed)
    _check(res, moving)
    assert interior_error(res.field, gt) < 0.5
    d = res.diagnostics[0]
    assert d["mind_after"] < d["mind_before"] and not d["suspect"]


def test_global_start_beyond_max_shift_is_not_considered():
    """A (12, -9) px shift (15 px at the centre, ~12 % of the 128 px long side) is found with the default bound
    (15 %) and not with max_shift 0.05: then no candidate is left but the identity, and the field stays 0."""
    moving = torch.from_numpy(textured(0))[None, None]
    gt = const_field(12.0, -9.0)
    fixed = 1.0 - warp.warp(moving, gt)
    found = MINDRegistrar(long_side=128, deformable=False)(moving, fixed)
    assert interior_error(found.field, gt) < 1.0 and found.diagnostics[0]["global_init"] != "identity"
    bounded = MINDRegistrar(long_side=128, deformable=False, max_shift=0.05)(moving, fixed)
    assert bounded.diagnostics[0]["global_init"] == "identity" and float(bounded.field.abs().max()) == 0.0
    with pytest.raises(ValueError, match="max_shift"):
        MINDRegistrar(max_shift=0)


def _smooth_field(seed: int, amplitude: float, h: int = H, w: int = W) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    f = np.stack([gaussian_filter(rng.standard_normal((h, w)), 12.0) for _ in range(2)])
    f *= amplitude / np.abs(f).max()
    return torch.from_numpy(f.astype(np.float32))[None]


def test_deformable_stage_recovers_a_smooth_field():
    """A smooth elastic field (max 3 px) plus a (2, 1) px shift on an inverted-contrast pair: the affine-only
    registrar cannot follow the elastic part, the deformable one reduces the interior EPE well below it."""
    moving = torch.from_numpy(textured(1))[None, None]
    gt = _smooth_field(0, 3.0) + const_field(2.0, 1.0)
    fixed = 1.0 - warp.warp(moving, gt)
    epe = {}
    for deformable in (False, True):
        res = MINDRegistrar(long_side=128, spacing=8, dense_iters=120, deformable=deformable)(moving, fixed)
        _check(res, moving)
        err = (res.field - gt)[..., 10:-10, 10:-10].pow(2).sum(1).sqrt().mean()
        epe[deformable] = float(err)
    before = float(gt[..., 10:-10, 10:-10].pow(2).sum(1).sqrt().mean())
    assert epe[True] < 0.5 * epe[False] and epe[True] < 0.25 * before


def test_odd_size_batch_and_resolution_change():
    """Two pairs of an odd size (67 x 93) with different shifts, registered at a smaller working size: each
    pair gets its own field, rescaled to the input size."""
    imgs = np.stack([textured(0, 67, 93), textured(5, 67, 93)])
    moving = torch.from_numpy(imgs)[:, None]
    gt = torch.cat([const_field(4.0, -2.0, h=67, w=93), const_field(-3.0, 3.0, h=67, w=93)])
    fixed = warp.warp(moving, gt)
    res = MINDRegistrar(long_side=64)(moving, fixed)
    _check(res, moving)
    for i in range(2):
        err = (res.field[i] - gt[i])[:, 8:-8, 8:-8].pow(2).sum(0).sqrt().mean()
        assert float(err) < 0.8


@pytest.mark.parametrize("blank_is", ["fixed", "moving"])
def test_content_free_image_keeps_the_input_and_is_flagged(blank_is):
    """Nothing to match: identity field, flagged suspect, saying why."""
    img = torch.from_numpy(textured(0))[None, None]
    blank = torch.full_like(img, 0.5)
    moving, fixed = (img, blank) if blank_is == "fixed" else (blank, img)
    res = MINDRegistrar(long_side=128)(moving, fixed)
    _check(res, moving)
    d = res.diagnostics[0]
    assert float(res.field.abs().max()) == 0.0 and d["suspect"] and "no structure" in d["fallback"]


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="equal"):
        MINDRegistrar()(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 40))
    with pytest.raises(ValueError, match="long_side"):
        MINDRegistrar(long_side=8)


def test_mind_similarity_in_registration_loss_is_cross_modal():
    """RegistrationLoss(similarity='mind') is 0-ish for an inverted-contrast aligned pair and grows with the
    misalignment, where pixel L1 prefers the wrong answer."""
    from alignfuse.losses.registration import RegistrationLoss

    img = torch.from_numpy(textured(0))[None, None]
    fixed = 1.0 - img
    loss = RegistrationLoss(similarity="mind", lambda_smooth=0.0)
    assert float(mind_distance(img, fixed)) < 1e-5
    values = [float(loss.sim(warp.warp(img, const_field(float(d), 0.0)), fixed)) for d in (0, 1, 3)]
    assert values[0] < values[1] < values[2]
    with pytest.raises(ValueError, match="mind"):
        RegistrationLoss(similarity="bogus")


def test_mind_pipeline_recovers_known_shift_on_real_sample_pair():
    """`mind+gff` on the committed RoadScene sample FLIR_00211 (IR shifted by (5, -3) px, VIS as is): the field
    comes back within 1 px (measured -5.38, 2.33). Not every pair works: on FLIR_06282 a wrong global start wins
    (median field (-9.4, 1.0)), see docs/RESULTS.md §1.6."""
    from pathlib import Path

    from alignfuse import io
    from alignfuse.api import register_arrays
    from alignfuse.registry import create_pipeline

    samples = Path(__file__).resolve().parents[1] / "samples"
    pair = io.load_pair(samples / "ir" / "FLIR_00211.jpg", samples / "vi" / "FLIR_00211.jpg")
    h, w = pair.ir.shape
    moving = warp.warp(torch.from_numpy(pair.ir)[None, None], const_field(5.0, -3.0, h=h, w=w))[0, 0].numpy()
    res = register_arrays(moving, pair.vis, create_pipeline("mind+gff"))
    inner = res.field[:, 20:-20, 20:-20]
    assert abs(np.median(inner[0]) + 5) < 1 and abs(np.median(inner[1]) - 3) < 1
