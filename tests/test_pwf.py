"""PWF fuser: the pyramid is exact, the blend stays within the sources, any size works; its loss; its recipe."""

from __future__ import annotations

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


def test_pwf_trains_and_exports(tmp_path):
    from pathlib import Path

    from alignfuse.learned_stages import load_pwf
    from alignfuse.training.recipes import TrainArgs, run_recipe

    data = tmp_path / "data"
    (data / "ir").mkdir(parents=True)
    (data / "vi").mkdir()
    import numpy as np

    from alignfuse import io

    rng = np.random.default_rng(0)
    for i in range(2):
        io.write_image(data / "ir" / f"p{i}.png", rng.random((48, 48)).astype(np.float32))
        io.write_image(data / "vi" / f"p{i}.png", rng.random((48, 48)).astype(np.float32))
    run_recipe(TrainArgs("pwf", data, None, "tiny", tmp_path / "run", progress=False))
    (tmp_path / "w").mkdir()
    for ext in ("safetensors", "json"):
        (tmp_path / "w" / f"pwf_cpu.{ext}").write_bytes((tmp_path / "run" / f"export.{ext}").read_bytes())
    net = load_pwf(Path(tmp_path / "w"))
    assert net(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)).fused.shape == (1, 1, 16, 16)
