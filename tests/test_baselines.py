"""Classical baselines: registrars recover known shifts (sign included), fail safely; fusers keep
the stronger source's structure.

Ground truth: ``fixed = warp(moving, gt)`` with :func:`alignfuse.warp.warp`, so a registrar that
follows the field convention must return ``field ~= gt`` (not ``-gt``).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation, binary_erosion, gaussian_filter

from alignfuse import warp
from alignfuse.baselines import (
    FUSERS,
    REGISTRARS,
    AverageFuser,
    ECCRegistrar,
    ElastixRegistrar,
    GuidedFilterFuser,
    LaplacianPyramidFuser,
    MaxFuser,
    PhaseCorrelationRegistrar,
)
from alignfuse.baselines.registration import ELASTIX_MISSING, pearson
from alignfuse.stages import Fuser, IdentityRegistrar, Registrar, RegistrationResult

H, W = 96, 128
SHIFT = (5.0, -3.0)  # (dx, dy) in pixels
MARGIN = 10  # border rows/cols excluded from field errors (fixed is border-padded there)
HAS_ITK = importlib.util.find_spec("itk") is not None


def textured(seed: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """Smooth random blobs + a few sharp-edged shapes, float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random((h, w)), 4.0)
    img = (img - img.min()) / (img.max() - img.min())
    img = 0.7 * img
    img[h // 5 : h // 2, w // 4 : w // 2] += 0.25
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 0.65 * h) ** 2 + (xx - 0.7 * w) ** 2 < (0.15 * h) ** 2] -= 0.2
    img[:, int(0.85 * w) :] += 0.1
    img += 0.03 * gaussian_filter(rng.standard_normal((h, w)), 1.0)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def const_field(dx: float, dy: float, b: int = 1, h: int = H, w: int = W) -> torch.Tensor:
    f = torch.zeros(b, 2, h, w)
    f[:, 0] = dx
    f[:, 1] = dy
    return f


def shifted_pair(seed: int = 0, shift=SHIFT):
    moving = torch.from_numpy(textured(seed))[None, None]
    gt = const_field(*shift)
    fixed = warp.warp(moving, gt)
    return moving, fixed, gt


def interior_error(field: torch.Tensor, gt: torch.Tensor) -> float:
    """Largest per-pixel displacement error (px) away from the border."""
    diff = (field - gt)[..., MARGIN:-MARGIN, MARGIN:-MARGIN]
    return float(diff.pow(2).sum(dim=1).sqrt().max())


def check_result(res: RegistrationResult, moving: torch.Tensor) -> None:
    b, _, h, w = moving.shape
    assert isinstance(res, RegistrationResult)
    assert res.aligned.shape == moving.shape and res.aligned.dtype == torch.float32
    assert res.field.shape == (b, 2, h, w) and res.field.dtype == torch.float32
    assert len(res.diagnostics) == b
    assert torch.isfinite(res.field).all()
    # aligned is the moving image warped by the returned field, nothing else
    torch.testing.assert_close(res.aligned, warp.warp(moving, res.field))


# ----------------------------------------------------------------------------------------------
# registration
# ----------------------------------------------------------------------------------------------


def test_tables_and_protocols():
    assert set(REGISTRARS) == {"identity", "phase", "ecc", "eccgrad", "elastix", "mind", "mindaffine", "global"}
    assert REGISTRARS["eccgrad"]().use_gradients
    assert set(FUSERS) == {"average", "max", "laplacian", "gff"}
    assert REGISTRARS["identity"] is IdentityRegistrar
    for name, cls in REGISTRARS.items():
        if name == "elastix" and not HAS_ITK:
            continue
        assert isinstance(cls(), Registrar)
    for cls in FUSERS.values():
        assert isinstance(cls(), Fuser)


def test_phase_recovers_known_shift():
    moving, fixed, gt = shifted_pair()
    res = PhaseCorrelationRegistrar()(moving, fixed)
    check_result(res, moving)
    d = res.diagnostics[0]
    assert {"method", "shift", "response", "confidence", "suspect"} <= set(d)
    assert d["method"] == "phase" and not d["suspect"]
    assert d["response"] > 0.5
    dx, dy = d["shift"]
    # measured: (4.98, -2.98), error ~0.03 px
    assert abs(dx - SHIFT[0]) < 0.5 and abs(dy - SHIFT[1]) < 0.5
    assert interior_error(res.field, gt) < 0.5
    ncc0, ncc1 = pearson(moving, fixed), pearson(res.aligned, fixed)
    assert ncc1 > ncc0 + 0.2 and ncc1 > 0.99


@pytest.mark.parametrize("use_gradients", [False, True])
def test_registrars_leave_inputs_untouched(use_gradients):
    """Regression: cv2.phaseCorrelate (OpenCV 5.0) windows its inputs in place."""
    moving, fixed, _ = shifted_pair()
    m0, f0 = moving.clone(), fixed.clone()
    for reg in (PhaseCorrelationRegistrar(use_gradients=use_gradients), ECCRegistrar(use_gradients=use_gradients)):
        reg(moving, fixed)
        assert torch.equal(moving, m0) and torch.equal(fixed, f0)


def test_phase_fractional_shift_upsampled():
    moving, fixed, gt = shifted_pair(seed=3, shift=(2.3, -1.7))
    err_up = interior_error(PhaseCorrelationRegistrar(upsample=20)(moving, fixed).field, gt)
    assert err_up < 0.25  # measured ~0.1 px (bilinear resampling of the ground truth biases it a little)


@pytest.mark.parametrize("motion", ["translation", "affine", "euclidean", "homography"])
def test_ecc_recovers_known_shift(motion):
    moving, fixed, gt = shifted_pair()
    res = ECCRegistrar(motion=motion)(moving, fixed)
    check_result(res, moving)
    d = res.diagnostics[0]
    assert {"method", "correlation", "confidence", "ncc_before", "ncc_after", "suspect", "fallback"} <= set(d)
    assert d["method"] == "ecc" and d["motion"] == motion
    assert not d["suspect"] and d["fallback"] is None
    assert d["correlation"] > 0.99
    assert d["ncc_after"] > d["ncc_before"] + 0.2
    # measured: translation ~0.005 px, affine/euclidean ~0.01-0.04 px, homography ~0.05 px
    assert interior_error(res.field, gt) < 0.5


def test_ecc_matrix_sign_convention():
    """cv2 ECC(template=fixed, input=moving) returns the sampling matrix: aligned[p] = moving[W p]."""
    moving, fixed, gt = shifted_pair()
    res = ECCRegistrar(motion="translation", init="identity")(moving, fixed)
    m = np.asarray(res.diagnostics[0]["matrix"])
    assert m[0, 2] == pytest.approx(SHIFT[0], abs=0.1) and m[1, 2] == pytest.approx(SHIFT[1], abs=0.1)
    # the opposite sign would make things worse, not better
    wrong = warp.warp(moving, -res.field)
    assert pearson(wrong, fixed) < pearson(moving, fixed) < pearson(res.aligned, fixed)


def test_ecc_recovers_affine_field():
    """A true affine (rotation + scale + shear + shift) checks the linear part is not transposed/inverted."""
    moving = torch.from_numpy(textured(1))[None, None]
    th = np.deg2rad(3.0)
    lin = 1.03 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) + np.array([[0.0, 0.02], [0.0, 0.0]])
    cx, cy = (W - 1) / 2, (H - 1) / 2
    t = np.array([cx, cy]) - lin @ np.array([cx, cy]) + np.array([3.0, -2.0])
    mat = torch.tensor(np.hstack([lin, t[:, None]]), dtype=torch.float32)[None]
    gt = warp.field_from_affine(mat, H, W)
    fixed = warp.warp(moving, gt)
    res = ECCRegistrar(motion="affine")(moving, fixed)
    check_result(res, moving)
    assert not res.diagnostics[0]["suspect"]
    # measured ~0.05 px
    assert interior_error(res.field, gt) < 0.5


def test_ecc_max_size_estimates_shrunk_and_lifts_the_matrix_back():
    """max_size=H: the 2x larger pair is estimated at half size and the affine lifted back to the input
    grid, so the field is still the true one (to a fraction of a pixel at the input size)."""
    h, w = 2 * H, 2 * W
    moving = torch.from_numpy(textured(1, h, w))[None, None]
    th = np.deg2rad(2.0)
    lin = 1.02 * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    t = c - lin @ c + np.array([6.0, -4.0])
    gt = warp.field_from_affine(torch.tensor(np.hstack([lin, t[:, None]]), dtype=torch.float32)[None], h, w)
    fixed = warp.warp(moving, gt)
    full = ECCRegistrar(motion="affine")(moving, fixed)
    shrunk = ECCRegistrar(motion="affine", max_size=W)(moving, fixed)
    check_result(shrunk, moving)
    assert shrunk.diagnostics[0]["estimated_at"] == (H, W) and full.diagnostics[0]["estimated_at"] == (h, w)
    assert interior_error(shrunk.field, gt) < 0.5
    with pytest.raises(ValueError, match="max_size"):
        ECCRegistrar(max_size=20)


def test_ecc_large_shift_needs_phase_init():
    """(28, 18) px at 96x128: the phase initialisation catches it; the 3-level pyramid from identity
    does not (it wanders off to a ~66 px warp), which the plausibility check catches and flags."""
    moving, fixed, gt = shifted_pair(shift=(28.0, 18.0))
    good = ECCRegistrar(motion="affine")(moving, fixed)
    assert interior_error(good.field, gt) < 0.5 and good.diagnostics[0]["init"] == "phase"
    bad = ECCRegistrar(motion="affine", init="identity")(moving, fixed)
    d = bad.diagnostics[0]
    assert interior_error(bad.field, gt) > 5 and d["suspect"] and d["fallback"]


def test_cross_modal_contrast_inversion():
    """fixed = 1 - shifted image. |grad(1 - I)| == |grad I|, so phase correlation on gradient
    magnitudes sees exactly the mono-modal problem and recovers the shift with the same response;
    on raw intensities the phase peak is negated and the estimate is lost (and flagged). ECC on
    intensities is not contrast-sign invariant: OpenCV refuses to minimise the correlation, so it
    falls back to its (gradient) phase initialisation, flagged; ECC on gradient magnitudes works."""
    moving, fixed, gt = shifted_pair()
    inv = 1.0 - fixed
    res = PhaseCorrelationRegistrar(use_gradients=True)(moving, inv)
    d = res.diagnostics[0]
    assert not d["suspect"] and d["response"] > 0.5
    assert interior_error(res.field, gt) < 0.5
    raw = PhaseCorrelationRegistrar(use_gradients=False)(moving, inv)
    assert interior_error(raw.field, gt) > 2.0 and raw.diagnostics[0]["suspect"]
    ecc = ECCRegistrar(motion="translation", use_gradients=True)(moving, inv)
    e = ecc.diagnostics[0]
    assert interior_error(ecc.field, gt) < 0.5 and not e["suspect"] and e["ncc_space"] == "gradient"
    ecc_int = ECCRegistrar(motion="translation")(moving, inv).diagnostics[0]
    assert ecc_int["suspect"] and ecc_int["fallback"] and ecc_int["init"] == "phase"


@pytest.mark.parametrize("which", ["fixed", "moving"])
def test_ecc_failure_is_caught_and_flagged(which):
    moving, fixed, _ = shifted_pair()
    blank = torch.full_like(fixed, 0.5)
    args = (moving, blank) if which == "fixed" else (blank, fixed)
    res = ECCRegistrar(motion="affine")(*args)  # must not raise
    check_result(res, args[0])
    d = res.diagnostics[0]
    assert d["suspect"] is True
    assert isinstance(d["fallback"], str) and "fell back" in d["fallback"]
    assert torch.allclose(res.field, torch.zeros_like(res.field))  # phase is blind on a blank image -> identity
    pr = PhaseCorrelationRegistrar()(*args)
    assert pr.diagnostics[0]["suspect"] and pr.diagnostics[0]["response"] == 0.0


@pytest.mark.parametrize("kind", ["blobs", "noise"])
def test_unrelated_images_are_flagged(kind):
    rng = np.random.default_rng(3)
    other = rng.random((H, W))
    if kind == "blobs":
        other = np.clip(3 * gaussian_filter(other, 3.0) - 1, 0, 1)
    a = torch.from_numpy(textured(0))[None, None]
    b = torch.from_numpy(other.astype(np.float32))[None, None]
    d = PhaseCorrelationRegistrar()(a, b).diagnostics[0]
    assert d["suspect"] and d["response"] < 0.1  # measured -0.09 (blobs), 0.02 (noise)
    e = ECCRegistrar()(a, b).diagnostics[0]
    assert e["suspect"] and e["fallback"] and e["init"].startswith("identity")


def test_batch_of_two():
    moving = torch.from_numpy(np.stack([textured(0), textured(5)]))[:, None]
    gt = torch.cat([const_field(5.0, -3.0), const_field(-2.0, 4.0)])
    fixed = warp.warp(moving, gt)
    for reg in (PhaseCorrelationRegistrar(), ECCRegistrar(motion="translation"), ECCRegistrar()):
        res = reg(moving, fixed)
        check_result(res, moving)
        for i in range(2):
            assert interior_error(res.field[i : i + 1], gt[i : i + 1]) < 0.5
    ident = IdentityRegistrar()(moving, fixed)
    assert torch.equal(ident.aligned, moving)


def test_elastix_missing_extra_is_clear():
    if HAS_ITK:
        pytest.skip("itk-elastix is installed")
    with pytest.raises(ImportError, match=r"alignfuse\[baselines\]"):
        ElastixRegistrar()
    assert "pip install 'alignfuse[baselines]'" in ELASTIX_MISSING


@pytest.mark.slow
def test_elastix_recovers_shift(tmp_path, monkeypatch):
    """...and writes nothing into the working directory (transformix's deformationField.nii goes to a private
    temporary folder)."""
    pytest.importorskip("itk")
    monkeypatch.chdir(tmp_path)
    moving, fixed, gt = shifted_pair(shift=(2.0, -1.5))
    res = ElastixRegistrar(transforms=("translation", "bspline"))(moving, fixed)
    assert list(tmp_path.iterdir()) == []
    check_result(res, moving)
    d = res.diagnostics[0]
    assert d["fallback"] is None and d["ncc_after"] > d["ncc_before"]
    diff = (res.field - gt)[..., 16:-16, 16:-16]
    assert float(diff.pow(2).sum(dim=1).sqrt().mean()) < 0.5


# ----------------------------------------------------------------------------------------------
# fusion
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FUSERS))
@pytest.mark.parametrize("size", [(37, 53), (96, 128), (5, 7)])
def test_fuser_shapes_and_range(name, size):
    g = torch.Generator().manual_seed(0)
    ir = torch.rand(2, 1, *size, generator=g)
    vis = torch.rand(2, 1, *size, generator=g)
    out = FUSERS[name]()(ir, vis)
    assert out.shape == ir.shape and out.dtype == ir.dtype
    assert torch.isfinite(out).all()
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_average_and_max():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 1, 37, 53, generator=g)
    b = torch.rand(2, 1, 37, 53, generator=g)
    torch.testing.assert_close(AverageFuser()(a, a), a)
    torch.testing.assert_close(AverageFuser()(a, b), (a + b) / 2)
    m = MaxFuser()(a, b)
    assert bool((m >= a).all() and (m >= b).all())


@pytest.mark.parametrize("fuser", [LaplacianPyramidFuser(), LaplacianPyramidFuser(levels=6), GuidedFilterFuser()])
@pytest.mark.parametrize("size", [(37, 53), (96, 128)])
def test_identical_inputs_reproduce_input(fuser, size):
    img = torch.from_numpy(textured(2, *size))[None, None]
    img = torch.cat([img, img.flip(-1)])
    out = fuser(img, img)
    assert float((out - img).abs().max()) < 1e-3


def _masked_corr(x: np.ndarray, y: np.ndarray, m: np.ndarray) -> float:
    return pearson(x[m], y[m])


def test_gff_keeps_both_salient_structures():
    """IR: bright square on a flat background; VIS: weak fine texture everywhere.

    GFF must keep the IR edge (it is the more salient detail there) and the VIS texture at full
    contrast away from the square; plain averaging halves both, which these thresholds reject.
    """
    rng = np.random.default_rng(0)
    ir = np.full((H, W), 0.1)
    ir[30:66, 40:88] = 0.9
    tex = gaussian_filter(rng.standard_normal((H, W)), 1.0)
    vis = np.clip(0.5 + 0.05 * tex / tex.std(), 0.0, 1.0)
    inside = ir > 0.5
    edge = binary_dilation(inside, iterations=1) & ~binary_erosion(inside, iterations=1)
    band = binary_dilation(inside, iterations=3) & ~binary_erosion(inside, iterations=3)
    far = ~binary_dilation(inside, iterations=15)

    def grad(x):
        gy, gx = np.gradient(x)
        return np.hypot(gx, gy)

    t_ir = torch.from_numpy(ir).float()[None, None]
    t_vis = torch.from_numpy(vis).float()[None, None]
    stats = {}
    for name, fuser in (("gff", GuidedFilterFuser()), ("average", AverageFuser())):
        f = fuser(t_ir, t_vis)[0, 0].double().numpy()
        stats[name] = {
            "edge_corr_ir": _masked_corr(f, ir, band),
            "tex_corr_vis": _masked_corr(f, vis, far),
            "edge_keep": grad(f)[edge].mean() / grad(ir)[edge].mean(),
            "tex_keep": f[far].std() / vis[far].std(),
        }
    gff, avg = stats["gff"], stats["average"]
    # measured: gff edge_corr 0.98, tex_corr 1.00, edge_keep 0.68, tex_keep 1.00; average 0.50 / 0.50
    assert gff["edge_corr_ir"] > 0.9 and gff["tex_corr_vis"] > 0.95
    assert gff["tex_keep"] > 0.9 > 0.6 > avg["tex_keep"]
    assert gff["edge_keep"] > avg["edge_keep"] + 0.1


def test_phase_weak_peak_keeps_input():
    rng = np.random.default_rng(5)
    a = torch.from_numpy(rng.random((1, 1, 64, 64), dtype=np.float32))
    b = torch.from_numpy(rng.random((1, 1, 64, 64), dtype=np.float32))  # unrelated noise: no real peak
    res = PhaseCorrelationRegistrar(min_response=0.5)(a, b)
    d = res.diagnostics[0]
    assert d["suspect"] and "kept the input" in d["fallback"]
    assert res.field.abs().max().item() == 0.0


def test_ecc_max_size_keeps_the_short_side_of_an_elongated_pair():
    """48x2400 with max_size 256 would need 4 halvings (3 px tall); the pyramid stops while the short side is
    still >= 2 * min_size, and the shift is recovered."""
    h, w = 48, 2400
    moving = torch.from_numpy(textured(2, h, w))[None, None]
    gt = torch.zeros(1, 2, h, w)
    gt[:, 0], gt[:, 1] = 4.0, -2.0
    fixed = warp.warp(moving, gt)
    res = ECCRegistrar(motion="translation", max_size=256)(moving, fixed)
    est_h, _ = res.diagnostics[0]["estimated_at"]
    assert est_h >= 2 * 16 and interior_error(res.field, gt) < 0.5
