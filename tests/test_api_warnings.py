"""The Python API says what the command line prints: read notes and suspect registrations as warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest

import alignfuse
from alignfuse import AlignfuseWarning

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _messages(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, AlignfuseWarning)]


@pytest.fixture()
def converted_pair(tmp_path):
    """A false-colour IR export (jet palette) and a visible image with an alpha channel."""
    ir = cv2.imread(str(SAMPLES / "ir/TNO_07.png"), cv2.IMREAD_GRAYSCALE)
    vis = cv2.imread(str(SAMPLES / "vi/TNO_07.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "ir_jet.png"), cv2.applyColorMap(ir, cv2.COLORMAP_JET))
    cv2.imwrite(str(tmp_path / "vi_rgba.png"), np.dstack([vis, vis, vis, np.full_like(vis, 255)]))
    return tmp_path / "ir_jet.png", tmp_path / "vi_rgba.png"


@pytest.mark.parametrize("call", [alignfuse.fuse, alignfuse.register])
def test_file_api_warns_each_read_note_and_keeps_them(converted_pair, tmp_path, call):
    ir, vis = converted_pair
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = call(ir, vis, tmp_path / "out.png", model="identity+average")
    said = _messages(record)
    assert result.notes == said  # the same notes, in reading order, each naming its file
    assert any("ir_jet.png (infrared): colour infrared reduced" in m for m in said)
    assert any("vi_rgba.png (visible): alpha channel dropped" in m for m in said)


def test_clean_pair_gives_no_warning(tmp_path):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = alignfuse.fuse(SAMPLES / "ir/TNO_07.png", SAMPLES / "vi/TNO_07.png", tmp_path / "f.png",
                                model="identity+average")
    assert result.notes == [] and not result.suspect and _messages(record) == []


def test_suspect_registration_warns_unless_told_not_to():
    vis = cv2.imread(str(SAMPLES / "vi/TNO_07.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    ir = np.full((200, 320), 0.5, np.float32)  # a shutter closed: nothing to register
    pipe = alignfuse.load_pipeline("default")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = alignfuse.fuse_arrays(ir, vis, pipe)
    assert result.suspect
    said = _messages(record)
    note = "infrared array: 320x200 resampled onto the 256x256 visible grid; a pipeline that registers absorbs"
    assert said[0].startswith(note) and result.notes == said[:1]
    assert said[1:] == ["suspect registration (the infrared image is constant (a covered lens or a dead sensor?): the "
                        "fused image is the visible image; an image is constant (no structure); kept the input "
                        "(identity))"]
    assert np.array_equal(result.fused, vis)  # nothing to fuse: the visible image, not a darkened one
    assert all(w.filename == __file__ for w in record)  # each points at the caller's line
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert alignfuse.register_arrays(ir, vis, pipe, warn=False).suspect
    assert _messages(record) == []


def test_default_flags_an_ir_of_another_size_it_could_not_register():
    # a dead IR sensor (grey + noise) delivered at another size: whatever the global search makes of the noise, the
    # chain keeps the input, which is only right if the cameras were registered before; the user must hear it
    vis = cv2.resize(cv2.imread(str(SAMPLES / "vi/TNO_07.png"), cv2.IMREAD_GRAYSCALE), (128, 128),
                     interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    ir = np.clip(0.5 + 0.01 * np.random.default_rng(0).standard_normal((100, 160)), 0, 1).astype(np.float32)
    result = alignfuse.register_arrays(ir, vis, alignfuse.load_pipeline("default"), warn=False)
    assert result.diagnostics["model"] == "identity" and not np.abs(result.field).any()
    assert result.suspect and "delivered at another size" in result.diagnostics["warning"]
