"""`alignfuse report`: exact-magnitude sweep presets."""

from __future__ import annotations

import numpy as np
import pytest

from alignfuse import synth
from alignfuse.errors import UserError

# ------------------------------------------------------------------------------------------------ synth
def _pair(spec: synth.SynthSpec, name: str = "a", size: tuple[int, int] = (96, 128)) -> synth.SynthPair:
    ir = np.random.default_rng(1).random(size).astype(np.float32)
    return synth.synthesise_pair(ir, ir, spec, synth.pair_rng(0, name))


@pytest.mark.parametrize("level", [5.0, 20.0])
def test_translation_sweep_has_the_exact_length(level):
    field = _pair(synth.sweep_spec("translation", level)).field
    assert np.allclose(np.hypot(field[0], field[1]), level, atol=1e-3)


def test_translation_direction_depends_on_the_pair_not_the_level():
    f5, f20 = (_pair(synth.sweep_spec("translation", lv)).field[:, 0, 0] for lv in (5, 20))
    assert np.allclose(f20, 4 * f5, atol=1e-3)
    other = _pair(synth.sweep_spec("translation", 5), name="b").field[:, 0, 0]
    assert not np.allclose(other, f5, atol=1e-2)


def test_rotation_and_scale_sweeps_are_exact():
    h, w = 96, 128
    y, x = 18, 34  # inside, away from the border where the numeric inverse clamps
    point = np.array([x - (w - 1) / 2, y - (h - 1) / 2])  # relative to the centre
    g = _pair(synth.sweep_spec("rotation", 10)).field[:, y, x]
    # the ground truth maps the point to a point at the same radius, rotated by 10 degrees either way
    angle = np.degrees(np.arccos(np.dot(point, point + g) / (np.linalg.norm(point) * np.linalg.norm(point + g))))
    assert np.linalg.norm(point + g) == pytest.approx(np.linalg.norm(point), rel=1e-4)
    assert angle == pytest.approx(10, abs=0.01)
    g = _pair(synth.sweep_spec("scale", 0.8)).field[:, y, x]
    assert np.allclose(point + g, point / 0.8, atol=1e-3)  # ir_warp shows ir_gt at c + 0.8 (p - c)


def test_sweep_identity_levels_are_the_none_preset_and_errors_are_user_errors():
    assert all(synth.sweep_spec(k, v) is synth.PRESETS["none"] for k, v in
               [("translation", 0), ("rotation", 0), ("scale", 1.0), ("elastic", 0)])
    assert synth.sweep_spec("elastic", 2).elastic and synth.sweep_spec("elastic", 2).elastic_alpha == 2
    with pytest.raises(UserError, match="unknown sweep"):
        synth.sweep_spec("shear", 1)
    for bad in ("custom:zoom=0", "custom:tnorm=-1", "custom:rotfix=nan"):
        with pytest.raises(UserError):
            synth.parse_preset(bad)


def test_exact_keys_draw_after_the_ranges():
    """tnorm adds its draws after the range draws: the range part of the translation is unchanged."""
    plain = _pair(synth.parse_preset("custom:tx=10")).field[:, 0, 0]
    both = _pair(synth.parse_preset("custom:tx=10,tnorm=5")).field[:, 0, 0]
    assert np.linalg.norm(both - plain) == pytest.approx(5, abs=1e-3)
