"""Feature extractors for perceptual losses: torchvision-compatible VGG loading and the substitute."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alignfuse.models.vgg import (
    VGG_HUB_FILES,
    GradientPyramidFeatures,
    VGGFeatures,
    build_feature_extractor,
    layer_stride,
    load_vgg_state_dict,
)

# torchvision features indices of the convolutions (cfg "D" / "E").
_CONV_IDX = {
    "vgg16": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28],
    "vgg19": [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34],
}
_WIDTHS = {
    "vgg16": [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512],
    "vgg19": [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512],
}




def fake_torchvision_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with torchvision's key names and shapes (plus a classifier key)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    cin = 3
    for idx, cout in zip(_CONV_IDX[arch], _WIDTHS[arch]):
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        state[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
        cin = cout
    state["classifier.0.weight"] = torch.zeros(4, 7)  # must be ignored
    return state


@pytest.fixture(scope="module")
def vgg19_state() -> dict[str, torch.Tensor]:
    return fake_torchvision_state("vgg19")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """Point TORCH_HOME and HOME at an empty folder so no real cache is found."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_layer_strides():
    assert layer_stride("relu1_1") == 1
    assert layer_stride("relu2_2") == 2
    assert layer_stride("relu4_1") == 8
    assert layer_stride("pool3") == 8
    assert layer_stride("scale2") == 4
    with pytest.raises(ValueError):
        layer_stride("fc7")


@pytest.mark.parametrize(
    "arch,layer,channels,stride",
    [("vgg19", "relu1_1", 64, 1), ("vgg19", "relu2_2", 128, 2), ("vgg19", "relu4_1", 512, 8),
     ("vgg19", "relu5_1", 512, 16), ("vgg16", "relu3_3", 256, 4)],
)
def test_vgg_layer_shapes(arch, layer, channels, stride):
    net = VGGFeatures(arch, (layer,))
    x = torch.rand(2, 1, 37, 53)
    out = net(x)[layer]
    assert out.shape == (2, channels, 37 // stride, 53 // stride)  # max-pool floors odd sizes
    assert net.channels[layer] == channels and net.strides[layer] == stride
    assert "NOT pretrained" in net.description


def test_vgg_frozen_but_differentiable():
    net = VGGFeatures("vgg16", ("relu1_2",))
    assert all(not p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    net(x)["relu1_2"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_load_pth_matches_manual_conv(tmp_path, vgg19_state):
    path = tmp_path / "weights.pth"
    torch.save(vgg19_state, path)
    net = build_feature_extractor("vgg19", layers=("relu1_1", "relu2_1", "relu4_1"), weights=path)
    assert isinstance(net, VGGFeatures)
    assert str(path) in net.description
    x = torch.rand(1, 1, 32, 48)
    out = net(x)
    w0, b0 = vgg19_state["features.0.weight"], vgg19_state["features.0.bias"]
    ref = F.relu(F.conv2d(x.repeat(1, 3, 1, 1), w0, b0, padding=1))
    torch.testing.assert_close(out["relu1_1"], ref)
    assert out["relu2_1"].shape == (1, 128, 16, 24)
    assert out["relu4_1"].shape == (1, 512, 4, 6)
    # only the layers up to relu4_1 (index 20) are built
    assert len(net.features) == 21


def test_load_safetensors_and_imagenet_normalisation(tmp_path, vgg19_state):
    from safetensors.torch import save_file

    path = tmp_path / "vgg19.safetensors"
    save_file({k: v.contiguous() for k, v in vgg19_state.items()}, str(path))
    net = VGGFeatures.from_pretrained("vgg19", ("relu1_1",), path, normalize_imagenet=True)
    x = torch.rand(1, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    w0, b0 = vgg19_state["features.0.weight"], vgg19_state["features.0.bias"]
    ref = F.relu(F.conv2d((x - mean) / std, w0, b0, padding=1))
    torch.testing.assert_close(net(x)["relu1_1"], ref)


def test_hub_cache_lookup(empty_cache, vgg19_state):
    empty_cache.mkdir(parents=True)
    torch.save(vgg19_state, empty_cache / VGG_HUB_FILES["vgg19"])
    state = load_vgg_state_dict("vgg19")
    torch.testing.assert_close(state["features.34.weight"], vgg19_state["features.34.weight"])
    net = build_feature_extractor("auto", layers=("relu4_1",))
    assert isinstance(net, VGGFeatures)
    assert VGG_HUB_FILES["vgg19"] in net.description


def test_missing_weights_error_lists_paths(empty_cache):
    with pytest.raises(FileNotFoundError) as err:
        load_vgg_state_dict("vgg16")
    assert str(empty_cache / VGG_HUB_FILES["vgg16"]) in str(err.value)
    with pytest.raises(FileNotFoundError):
        build_feature_extractor("vgg19")
    with pytest.raises(FileNotFoundError):  # an explicit path is never silently replaced
        build_feature_extractor("auto", weights=empty_cache / "nope.pth")


def test_auto_falls_back_with_warning(empty_cache, caplog):
    with caplog.at_level(logging.WARNING, logger="alignfuse.models.vgg"):
        net = build_feature_extractor("auto", layers=("relu2_2", "relu4_1"))
    assert isinstance(net, GradientPyramidFeatures)
    assert "GradientPyramidFeatures" in net.description
    assert any("GradientPyramidFeatures" in r.getMessage() for r in caplog.records)


def test_wrong_state_dict_clear_error(tmp_path):
    vgg16 = tmp_path / "vgg16.pth"
    torch.save(fake_torchvision_state("vgg16"), vgg16)
    with pytest.raises(ValueError, match="not a torchvision vgg19 state dict") as err:
        load_vgg_state_dict("vgg19", vgg16)
    assert str(vgg16) in str(err.value)
    with pytest.raises(ValueError, match="missing"):
        VGGFeatures("vgg16", ("relu1_1",), weights={"conv.weight": torch.zeros(1)})
    bad = fake_torchvision_state("vgg16")
    bad["features.0.weight"] = torch.zeros(64, 1, 3, 3)
    with pytest.raises(ValueError, match="wrong shapes"):
        VGGFeatures("vgg16", ("relu1_1",), weights=bad)


def test_gradient_substitute_interface():
    net = GradientPyramidFeatures(("relu1_1", "relu2_2", "relu4_1", "scale1"))
    out = net(torch.rand(2, 3, 37, 53))
    assert list(out) == ["relu1_1", "relu2_2", "relu4_1", "scale1"]
    assert out["relu1_1"].shape == (2, 4, 37, 53)
    assert out["relu2_2"].shape == (2, 4, 18, 26)
    assert out["relu4_1"].shape == (2, 4, 4, 6)
    assert not list(net.parameters()) or all(not p.requires_grad for p in net.parameters())
    # a horizontal ramp: intensity channel = image, d/dx = slope, d/dy = 0, Laplacian = 0 inside
    ramp = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 1, 8, 16)
    f = GradientPyramidFeatures(("scale0",))(ramp)["scale0"]
    torch.testing.assert_close(f[:, 0], ramp[:, 0])
    torch.testing.assert_close(f[0, 1, :, 1:-1], torch.full((8, 14), 1 / 15))
    torch.testing.assert_close(f[0, 2], torch.zeros(8, 16))
    torch.testing.assert_close(f[0, 3, :, 1:-1], torch.zeros(8, 14), atol=1e-6, rtol=0)
