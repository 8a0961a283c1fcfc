"""Tests for alignfuse.metrics.

Fusion metrics are checked against every row of tests/data/metric_reference/reference.csv (VIFB MATLAB code
run under Octave; see the README there) at relative 1e-9 (13 VIFB metrics, SCD) and 1e-6 (VIFF, VIFp_sum).
"""

from __future__ import annotations

import csv
import math
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignfuse.metrics import (
    FUSION_METRIC_NAMES,
    METRIC_INFO,
    VIFB_METRIC_NAMES,
    CC_mean,
    Qabf,
    Spatial_frequency,
    Ssim,
    SSIM_mean,
    compute_fusion_metrics,
    compute_registration_metrics,
    epe,
    mse,
    mutual_information,
    ncc,
)

DATA = Path(__file__).parent / "data" / "metric_reference"
LOOSE = {"VIFF": 1e-6, "VIFp_sum": 1e-6}  # everything else: 1e-9 (README section 3)


def _read(name: str) -> np.ndarray:
    return np.asarray(Image.open(DATA / f"{name}.png"))


def _rows() -> list[tuple[str, str, str, float]]:
    with open(DATA / "reference.csv", newline="") as fh:
        return [(r["pair"], r["fused"], r["metric"], float(r["value"])) for r in csv.DictReader(fh)]


ROWS = _rows()


def _inputs(pair: str, fused: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vi = _read(f"{pair}_vi_rgb" if fused.endswith("_rgb") else f"{pair}_vi")
    return vi, _read(f"{pair}_ir"), _read(f"{pair}_{fused}")


@lru_cache(maxsize=None)
def _computed(pair: str, fused: str) -> dict[str, float]:
    names = tuple(m for p, f, m, _ in ROWS if p == pair and f == fused)
    return compute_fusion_metrics(*_inputs(pair, fused), names=names)


@lru_cache(maxsize=None)
def _grey_triple(pair: str = "pair01", fused: str = "avg") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return _inputs(pair, fused)


def test_reference_table_is_complete():
    assert len(ROWS) == 522
    assert {m for _, _, m, _ in ROWS} == set(VIFB_METRIC_NAMES) | {"VIFF", "VIFp_sum", "SCD"}


@pytest.mark.parametrize("pair,fused,metric,ref", ROWS, ids=[f"{p}-{f}-{m}" for p, f, m, _ in ROWS])
def test_matches_vifb_reference(pair, fused, metric, ref):
    value = _computed(pair, fused)[metric]
    assert value == pytest.approx(ref, rel=LOOSE.get(metric, 1e-9), abs=0)


def test_single_functions_match_compute_all():
    import alignfuse.metrics as M

    vi, ir, f = _grey_triple()
    allv = compute_fusion_metrics(vi, ir, f)
    assert list(allv) == list(FUSION_METRIC_NAMES)
    for name in ("Entropy", "Qabf", "Qcv", "Psnr", "VIFF", "SCD"):
        assert getattr(M, name)(vi, ir, f) == allv[name]


def test_metric_info_complete():
    assert set(METRIC_INFO) == set(FUSION_METRIC_NAMES)
    assert set(VIFB_METRIC_NAMES) <= set(METRIC_INFO)
    for info in METRIC_INFO.values():
        assert isinstance(info["higher_is_better"], bool) and info["convention"]
    assert METRIC_INFO["Qcv"]["higher_is_better"] is False
    assert METRIC_INFO["Cross_entropy"]["higher_is_better"] is False


def test_ssim_mean_cc_mean_definitions():
    vi, ir, f = _grey_triple()
    assert SSIM_mean(vi, ir, f) == pytest.approx(Ssim(vi, ir, f) / 2, rel=1e-15)
    cc = (np.corrcoef(f.ravel(), vi.ravel())[0, 1] + np.corrcoef(f.ravel(), ir.ravel())[0, 1]) / 2
    assert CC_mean(vi, ir, f) == pytest.approx(cc, rel=1e-12)


def test_input_types_equivalent():
    torch = pytest.importorskip("torch")
    vi, ir, f = _grey_triple()
    names = ["Entropy", "Qabf", "Ssim", "Mutinf"]
    ref = compute_fusion_metrics(vi, ir, f, names)
    assert compute_fusion_metrics(vi.astype(np.float64), ir.astype(np.float32), f.astype(np.float64), names) == ref
    t = [torch.from_numpy(x.copy()) for x in (vi, ir, f)]
    assert compute_fusion_metrics(*t, names) == ref


def test_colour_rule_identical_channels_equal_grey():
    vi, ir, f = _grey_triple()
    rgb = lambda x: np.repeat(x[:, :, None], 3, axis=2)  # noqa: E731
    names = [n for n in FUSION_METRIC_NAMES if n != "Spatial_frequency"]
    grey = compute_fusion_metrics(vi, ir, f, names)
    colour = compute_fusion_metrics(rgb(vi), ir, rgb(f), names)  # grey IR broadcast to the 3 channels
    for n in names:
        assert colour[n] == pytest.approx(grey[n], rel=1e-12), n
    # Spatial_frequency treats RGB as the H x 3W image [R|G|B] (no channel loop)
    x = np.concatenate([f, f, f], axis=1).astype(np.float64)
    sf = math.sqrt((np.sum(np.diff(x, axis=1) ** 2) + np.sum(np.diff(x, axis=0) ** 2)) / x.size)
    assert Spatial_frequency(rgb(vi), ir, rgb(f)) == pytest.approx(sf, rel=1e-12)


def test_bad_inputs_raise():
    vi, ir, f = _grey_triple()
    with pytest.raises(ValueError):
        compute_fusion_metrics(np.repeat(vi[:, :, None], 3, axis=2), ir, f)  # colour VI, grey F
    with pytest.raises(ValueError):
        compute_fusion_metrics(vi[:-1], ir, f)
    with pytest.raises(KeyError):
        compute_fusion_metrics(vi, ir, f, ["SSIM"])


def test_qabf_tie_rule():
    # F == VI: every non-zero tie gives G = gF (so Qg = Tg), orientation agrees exactly (Qa = Ta/(1+e^-4.4)).
    vi, ir, f = _grey_triple()
    q = Qabf(vi, vi, vi)
    assert q == pytest.approx(0.9994 * 0.9879 / (1 + math.exp(-22 * 0.2)), rel=1e-12)


def test_constant_fused_image():
    """Constant F (value 128) with textured sources. MATLAB stays finite for all but three metrics:
    Qcb and Qcv (normalize1 divides 0 by 0) and CC_mean (Pearson of a constant); these are NaN here too."""
    vi, ir, _ = _grey_triple()
    f = np.full(vi.shape, 128, dtype=np.uint8)
    r = compute_fusion_metrics(vi, ir, f)
    assert r["Entropy"] == 0 and r["Variance"] == 0 and r["Spatial_frequency"] == 0
    assert r["Avg_gradient"] == 0 and r["Edge_intensity"] == 0
    assert r["Mutinf"] == 0 and r["VIFp_sum"] == 0
    # Qabf: zero-padded conv2 gives F gradients on the border only, so Qabf is small but not 0
    assert 0 < r["Qabf"] < 0.2
    for n in ("Cross_entropy", "Ssim", "Psnr", "Rmse", "VIFF", "SCD", "SSIM_mean"):
        assert math.isfinite(r[n]), n
    for n in ("Qcb", "Qcv", "CC_mean"):
        assert math.isnan(r[n]), n


def test_vif_small_images():
    """VIF windows are 17, 9, 5, 3 px: VIFF's 4th scale is empty below 41 px, giving 0/0 = NaN as in MATLAB;
    VIFp_sum just sums nothing for an empty scale."""
    rng = np.random.default_rng(0)
    for n, finite in ((40, False), (41, True)):
        a, b, c = (rng.integers(0, 256, (n, n + 7)) for _ in range(3))
        r = compute_fusion_metrics(a, b, c, ["VIFF", "VIFp_sum"])
        assert math.isfinite(r["VIFF"]) == finite and math.isfinite(r["VIFp_sum"])


def test_all_constant_images():
    """All three constant: Mutinf maps constant images to zeros (finite); Ssim = 2; Psnr = inf when F == sources."""
    c = np.full((40, 50), 77, dtype=np.uint8)
    r = compute_fusion_metrics(c, c, c, ["Mutinf", "Entropy", "Cross_entropy", "Ssim", "Psnr", "Rmse"])
    assert r["Mutinf"] == 0 and r["Entropy"] == 0 and r["Cross_entropy"] == 0
    assert r["Ssim"] == pytest.approx(2.0, rel=1e-12)
    assert r["Psnr"] == math.inf and r["Rmse"] == 0


def test_speed_640x480():
    rng = np.random.default_rng(0)
    vi = _grey_triple()[0]
    vi = np.tile(vi, (2, 2))[:480, :640]
    ir = np.tile(_grey_triple()[1], (2, 2))[:480, :640]
    f = np.floor(0.6 * vi + 0.4 * ir + rng.uniform(0, 1, vi.shape))
    compute_fusion_metrics(vi, ir, f, ["Entropy"])  # warm-up imports
    t0 = time.perf_counter()
    r = compute_fusion_metrics(vi, ir, f)
    dt = time.perf_counter() - t0
    assert all(math.isfinite(v) for v in r.values())
    assert dt < 4.0, f"all fusion metrics took {dt:.2f} s on 640x480 (budget 2 s, CI limit 4 s)"


# ------------------------------------------------------------------------------------------------------------
# Registration metrics
# ------------------------------------------------------------------------------------------------------------

@pytest.fixture
def img() -> np.ndarray:
    return _grey_triple()[1].astype(np.float64) / 255.0


def test_mse(img):
    assert mse(img, img) == 0
    assert mse(img, img + 0.1) == pytest.approx(0.01, rel=1e-12)
    assert mse(np.zeros((3, 4)), np.ones((1, 1, 3, 4))) == 1.0


def test_ncc(img):
    assert ncc(img, img) == pytest.approx(1.0, abs=1e-12)
    assert ncc(img, -img) == pytest.approx(-1.0, abs=1e-12)
    assert ncc(img, 0.5 * img + 0.2) == pytest.approx(1.0, abs=1e-12)  # invariant to gain and offset
    rng = np.random.default_rng(1)
    a, b = rng.random((30, 40)), rng.random((30, 40))
    assert ncc(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], rel=1e-12)
    assert ncc(np.full((5, 5), 0.3), img[:5, :5]) == 0.0  # constant: 0, not NaN


def test_mutual_information(img):
    q = np.floor(img * 255 + 0.5).astype(int)
    p = np.bincount(q.ravel(), minlength=256) / q.size
    h = -np.sum(p[p > 0] * np.log(p[p > 0]))
    assert mutual_information(img, img) == pytest.approx(h, rel=1e-12)  # MI(a, a) = H(a), nats
    assert mutual_information(img, img, base=2) == pytest.approx(h / math.log(2), rel=1e-12)
    assert mutual_information(img, 1 - img) == pytest.approx(h, rel=1e-12)  # any bijection of levels
    assert mutual_information(img, np.full_like(img, 0.5)) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(2)
    # independent images: near 0 (the plug-in estimator's bias is about (bins-1)^2 / (2N) nats)
    assert mutual_information(rng.random((200, 200)), rng.random((200, 200)), bins=16) < 0.01
    # values outside [0, 1] are clipped into the end bins
    assert mutual_information(img * 2 - 0.5, img) == mutual_information(np.clip(img * 2 - 0.5, 0, 1), img)


def test_epe():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    f = rng.normal(size=(2, 9, 11))
    assert epe(f, f) == {"mean": 0.0, "p95": 0.0}
    g = f.copy()
    g[0] += 3
    g[1] += 4
    e = epe(f, g)
    assert e["mean"] == pytest.approx(5.0, rel=1e-12) and e["p95"] == pytest.approx(5.0, rel=1e-12)
    # torch (1, 2, H, W) accepted
    assert epe(torch.from_numpy(f)[None], torch.from_numpy(g)[None])["mean"] == pytest.approx(5.0, rel=1e-12)
    # valid mask respected: a huge error outside the mask is ignored
    h = g.copy()
    h[:, :3, :] += 100.0
    valid = np.ones((9, 11), dtype=bool)
    valid[:3] = False
    assert epe(f, h, valid)["mean"] == pytest.approx(5.0, rel=1e-12)
    assert epe(f, h)["mean"] > 20
    assert all(math.isnan(v) for v in epe(f, h, np.zeros((9, 11), bool)).values())
    # p95 is numpy's linear percentile of the per-pixel norms
    err = np.sqrt(((f - h) ** 2).sum(0)).ravel()
    assert epe(f, h)["p95"] == pytest.approx(np.percentile(err, 95), rel=1e-12)
    with pytest.raises(ValueError):
        epe(f[0], f[0])


def test_compute_registration_metrics(img):
    r = compute_registration_metrics(img, img)
    assert set(r) == {"MSE", "NCC", "MI"}
    assert r["MSE"] == 0 and r["NCC"] == pytest.approx(1.0, abs=1e-12)
    field = np.zeros((2,) + img.shape, dtype=np.float32)
    r = compute_registration_metrics(img, img, field, field + 1, np.ones(img.shape, bool))
    assert set(r) == {"MSE", "NCC", "MI", "EPE_mean", "EPE_p95"}
    assert r["EPE_mean"] == pytest.approx(math.sqrt(2), rel=1e-12)
    with pytest.raises(ValueError):
        compute_registration_metrics(img, img, field)


def test_check_point_errors_are_the_field_offset_in_raw_ir_pixels():
    """A constant field on the visible grid of an IR delivered at twice the visible size: every check point's error
    is the field's offset times the size ratio, read bilinearly between pixels, and the TRE is its length."""
    from alignfuse.io import field_to_ir_coordinates
    from alignfuse.metrics import check_point_errors, target_registration_error

    h, w = 30, 40
    field = np.stack([np.full((h, w), 1.5), np.full((h, w), -0.5)])
    coords = field_to_ir_coordinates(field, (2 * w, 2 * h))
    vis = np.array([[3.0, 4.0], [10.5, 20.25], [39.0, 29.0]])
    truth = (vis + 0.5) * 2 - 0.5  # where an exact registration (zero field) puts each visible point
    err = check_point_errors(coords, np.hstack([vis, truth]))
    assert err.shape == (3, 2)
    np.testing.assert_allclose(err, np.tile([3.0, -1.0], (3, 1)), atol=1e-4)
    assert target_registration_error(coords, np.hstack([vis, truth])) == pytest.approx(np.hypot(3.0, 1.0), abs=1e-4)
