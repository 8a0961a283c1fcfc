"""Fixed rigs: rig files, the consensus of per-frame estimates, the rig as a global stage, `calibrate` / `--rig`."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from alignfuse import cli, io
from alignfuse.errors import UserError
from alignfuse.registration.rig import (FrameEstimate, RigModel, RigRegistrar, _ir_to_grid, consensus, corner_error,
                                        frame_corners)
from alignfuse.synth_rig import deliver_ir, example_rig, jittered, seen_by_ir, true_field

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
VIS, IRS = (256, 192), (256, 205)


def _rig() -> np.ndarray:
    return example_rig(VIS, IRS, shift=(9.0, -6.0), scale=0.9, angle_deg=2.0, perspective=1e-5)


def test_rig_file_round_trip(tmp_path):
    rig = RigModel(_rig(), VIS, IRS, "homography", {"frames": 5, "agreed": 4}, {"corner_rms": 0.5}, "ok", "fine")
    path = rig.save(tmp_path / "rig.json")
    back = RigModel.load(path)
    np.testing.assert_allclose(back.matrix, rig.matrix)
    assert (back.vis_size, back.ir_size, back.verdict) == (VIS, IRS, "ok")
    text = json.loads(path.read_text())
    assert "raw IR pixel" in text["convention"] and text["frames"]["agreed"] == 4


@pytest.mark.parametrize("content, what", [
    ("{not json", "invalid JSON"),
    ('{"format": "other"}', "format"),
    ('{"format": "alignfuse-rig/1", "matrix": [[1, 0], [0, 1]], "vis_size": [4, 4], "ir_size": [4, 4]}', "3x3"),
    ('{"format": "alignfuse-rig/1", "matrix": [[1, 0, NaN], [0, 1, 0], [0, 0, 1]], "vis_size": [4, 4], '
     '"ir_size": [4, 4]}', "finite"),
    ('{"format": "alignfuse-rig/1", "matrix": [[0, 0, 0], [0, 0, 0], [0, 0, 1]], "vis_size": [4, 4], '
     '"ir_size": [4, 4]}', "singular"),
    ('{"format": "alignfuse-rig/1", "matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "vis_size": [4, -1], '
     '"ir_size": [4, 4]}', "vis_size"),
    ('{"format": "alignfuse-rig/1", "matrix": "eye", "vis_size": [4, 4], "ir_size": [4, 4]}', "3x3"),
])
def test_corrupt_rig_file_is_a_user_error_naming_it(tmp_path, content, what):
    path = tmp_path / "rig.json"
    path.write_text(content)
    with pytest.raises(UserError, match=what) as info:
        RigModel.load(path)
    assert str(path) in str(info.value)


def test_consensus_averages_the_agreeing_frames_and_drops_the_outlier():
    rng = np.random.default_rng(0)
    truth = _ir_to_grid(VIS, IRS) @ _rig()
    estimates = [FrameEstimate(f"f{i}", _ir_to_grid(VIS, IRS) @ jittered(_rig(), 0.4, rng), 0.3, None)
                 for i in range(12)]
    estimates.append(FrameEstimate("wrong", _ir_to_grid(VIS, IRS) @ jittered(_rig(), 40.0, rng), 0.3, None))
    estimates.append(FrameEstimate("flat", np.eye(3), 0.0, "no global alignment lowers the MIND distance"))
    rig = consensus(estimates, VIS, IRS)
    assert rig.verdict == "ok"
    assert rig.frames == {"frames": 14, "confident": 13, "agreed": 12}
    # 12 frames of 0.4 px jitter: the mean is within ~0.4 / sqrt(12) of the truth, far below one frame's error
    assert corner_error(rig.grid_matrix(), truth, VIS) < 0.5
    assert 0.1 < rig.spread_px["corner_rms"] < 1.5


def test_consensus_without_enough_confident_frames_fails_or_keeps_identity():
    flat = [FrameEstimate(f"f{i}", np.eye(3), 0.0, "kept the input") for i in range(3)]
    assert consensus(flat, VIS, VIS).model == "identity" and consensus(flat, VIS, VIS).verdict == "ok"
    # an IR of another size that matched nothing (suspect) is no vote for an aligned rig
    unmatched = [FrameEstimate(f"f{i}", np.eye(3), 0.0, "kept the input", suspect=True) for i in range(3)]
    rig = consensus(unmatched, VIS, IRS)
    assert rig.verdict == "failed" and "matched the visible image nowhere" in rig.reason
    one = [FrameEstimate("a", np.eye(3), 0.5, None), FrameEstimate("b", np.eye(3), 0.0, "kept")]
    assert consensus(one, VIS, VIS).verdict == "failed"


def test_rig_registrar_field_is_the_rig_and_sizes_are_checked():
    rig = RigModel(_rig(), VIS, IRS)
    reg = RigRegistrar(rig)
    moving = torch.rand(1, 1, VIS[1], VIS[0])
    result = reg(moving, moving, ir_size=IRS)
    np.testing.assert_allclose(result.field[0].numpy(), true_field(_rig(), VIS, IRS), atol=1e-3)
    assert result.diagnostics[0]["method"] == "rig"
    with pytest.raises(UserError, match="calibrated for visible 256x192"):
        reg(moving, moving, ir_size=(320, 256))


def _write_rig_frames(folder: Path, n: int = 3, jitter: float = 0.2, rig: np.ndarray | None = None) -> np.ndarray:
    """n frames of the sample FLIR pairs through one rig (visible 256x192, IR 256x205; ``_rig()`` unless given)
    -> the rig."""
    rig = _rig() if rig is None else rig
    (folder / "ir").mkdir(parents=True)
    (folder / "vi").mkdir()
    rng = np.random.default_rng(1)
    stems = ["FLIR_00211", "FLIR_04593", "FLIR_06282"]
    for i in range(n):
        pair = io.load_pair(SAMPLES / "ir" / f"{stems[i % 3]}.jpg", SAMPLES / "vi" / f"{stems[i % 3]}.jpg")
        vis = cv2.resize(pair.vis, VIS, interpolation=cv2.INTER_AREA)
        ir = cv2.resize(pair.ir, VIS, interpolation=cv2.INTER_AREA)
        io.write_image(folder / "vi" / f"frame{i:03d}.png", vis)
        io.write_image(folder / "ir" / f"frame{i:03d}.png", deliver_ir(ir, jittered(rig, jitter, rng), IRS))
    return rig


def test_calibrate_then_fuse_and_register_with_the_rig(tmp_path, capsys):
    # four frames: the third sample scene's estimate is weakly supported and ~6 px off at the corners of this
    # 256x192 frame, at the consensus tolerance's edge, so three frames alone make the verdict a coin toss
    truth = _write_rig_frames(tmp_path, n=4)
    rig_path = tmp_path / "rig.json"
    assert cli.main(["calibrate", "--ir-dir", str(tmp_path / "ir"), "--vis-dir", str(tmp_path / "vi"),
                     "-o", str(rig_path)]) == 0
    assert "verdict ok" in capsys.readouterr().out
    rig = RigModel.load(rig_path)
    assert rig.vis_size == VIS and rig.ir_size == IRS and rig.frames["agreed"] == 3
    # the sample pairs are hand-aligned to ~1-2 px; the rig must be found to within a few px at the corners
    assert corner_error(rig.grid_matrix(), _ir_to_grid(VIS, IRS) @ truth, VIS) < 4.0
    field_path = tmp_path / "field.npy"
    assert cli.main(["register", str(tmp_path / "ir" / "frame000.png"), str(tmp_path / "vi" / "frame000.png"),
                     "-o", str(tmp_path / "aligned.png"), "--field", str(field_path), "--rig", str(rig_path),
                     "--no-local"]) == 0
    np.testing.assert_allclose(np.load(field_path), true_field(rig.matrix, VIS, IRS), atol=1e-2)
    assert cli.main(["fuse", str(tmp_path / "ir" / "frame001.png"), str(tmp_path / "vi" / "frame001.png"),
                     "-o", str(tmp_path / "fused.png"), "--rig", str(rig_path), "--model", "default+gff"]) == 0
    assert (tmp_path / "fused.png").exists()


def test_calibrate_a_narrow_field_rig(tmp_path, capsys):
    """An IR that sees 59 % of the visible width: `calibrate --ir-field narrower` finds it (the default search does
    not try such scales)."""
    truth = _write_rig_frames(tmp_path, n=4, rig=example_rig(VIS, IRS, shift=(9.0, -6.0), scale=1.7, angle_deg=2.0,
                                                             perspective=0.0))
    rig_path = tmp_path / "rig.json"
    assert cli.main(["calibrate", "--ir-dir", str(tmp_path / "ir"), "--vis-dir", str(tmp_path / "vi"),
                     "-o", str(rig_path), "--ir-field", "narrower"]) == 0
    rig = RigModel.load(rig_path)
    assert rig.verdict == "ok"
    # judged where the IR sees the scene (the visible corners lie outside it: a homography extrapolates there)
    seen = seen_by_ir(truth, VIS, IRS)
    assert seen_by_ir(np.linalg.inv(_ir_to_grid(VIS, IRS)), VIS, IRS).all()  # a pure resampling sees every pixel
    err = np.hypot(*(true_field(rig.matrix, VIS, IRS) - true_field(truth, VIS, IRS)))[seen]
    assert seen.mean() < 0.5 and err.mean() < 3.0, err.mean()


def test_rig_of_another_size_is_a_clear_error(tmp_path, capsys):
    rig_path = RigModel(_rig(), VIS, IRS).save(tmp_path / "rig.json")
    code = cli.main(["register", str(SAMPLES / "ir" / "FLIR_00211.jpg"), str(SAMPLES / "vi" / "FLIR_00211.jpg"),
                     "-o", str(tmp_path / "a.png"), "--rig", str(rig_path)])
    err = capsys.readouterr().err
    assert code == 2 and "calibrated for visible 256x192" in err and str(rig_path) in err
    assert err.count("\n") == 1


def test_rig_with_a_pipeline_that_has_no_global_stage_is_a_user_error(tmp_path, capsys):
    rig_path = RigModel(_rig(), VIS, IRS).save(tmp_path / "rig.json")
    code = cli.main(["register", str(SAMPLES / "ir" / "FLIR_00211.jpg"), str(SAMPLES / "vi" / "FLIR_00211.jpg"),
                     "-o", str(tmp_path / "a.png"), "--rig", str(rig_path), "--model", "identity+average"])
    assert code == 2 and "rig" in capsys.readouterr().err


def test_frame_corners_order():
    c = frame_corners(np.eye(3), (10, 5))
    np.testing.assert_array_equal(c, [[0, 0], [9, 0], [0, 4], [9, 4]])


def test_joint_refinement_recovers_one_matrix_shared_by_several_frames():
    from alignfuse.registration.global_search import refine_matrix_joint

    rng = np.random.default_rng(3)
    truth = np.array([[1.02, 0.01, 3.2], [-0.01, 0.99, -2.1], [0.0, 0.0, 1.0]])
    movings, fixeds = [], []
    for _ in range(2):
        scene = cv2.GaussianBlur(rng.random((160, 200)).astype(np.float32), (0, 0), 5.0)
        scene = (scene - scene.min()) / (scene.max() - scene.min())
        # moving sampled at truth @ p equals fixed at p (warpPerspective: dst(u) = src(truth^-1 u))
        moving = cv2.warpPerspective(scene, truth, (200, 160), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT)
        movings.append(torch.from_numpy(moving)[None, None])
        fixeds.append(torch.from_numpy(scene)[None, None])
    found, _ = refine_matrix_joint(movings, fixeds, np.eye(3), (100, 200), (30, 30), ("affine", "affine"))
    assert corner_error(found, truth, (200, 160)) < 0.3


def test_calibrate_from_two_videos(tmp_path, capsys):
    av = pytest.importorskip("av")
    frames = tmp_path / "frames"
    _write_rig_frames(frames, n=3, jitter=0.0)
    for kind, sub in (("ir", "ir"), ("vis", "vi")):
        container = av.open(str(tmp_path / f"{kind}.mkv"), "w")
        stream = container.add_stream("ffv1", rate=5)
        first = io.read_image(next((frames / sub).glob("*.png")), kind="vis").data
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = "yuv444p" if kind == "vis" else "gray"
        for path in sorted((frames / sub).glob("*.png")):
            img = np.round(io.read_image(path, kind="vis").data * 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24" if img.ndim == 3 else "gray")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        container.close()
    rig_path = tmp_path / "rig.json"
    assert cli.main(["calibrate", "--ir-video", str(tmp_path / "ir.mkv"), "--vis-video", str(tmp_path / "vis.mkv"),
                     "-o", str(rig_path)]) == 0
    rig = RigModel.load(rig_path)
    assert rig.ir_size == IRS and rig.vis_size == VIS and rig.frames["frames"] == 3
    assert corner_error(rig.grid_matrix(), _ir_to_grid(VIS, IRS) @ _rig(), VIS) < 4.0
    capsys.readouterr()
    assert cli.main(["calibrate", "--ir-video", str(tmp_path / "ir.mkv"), "-o", str(rig_path)]) == 2
    assert "--vis-video" in capsys.readouterr().err


def test_ir_field_with_a_rig_file_is_a_clear_error():
    from alignfuse.model_pipelines import rig_registrar

    rig = RigModel(_rig(), VIS, IRS, "homography", {"frames": 5, "agreed": 4}, {"corner_rms": 0.5}, "ok", "fine")
    with pytest.raises(UserError, match="calibrate"):
        rig_registrar(rig=rig, ir_field="narrower", local=False)
    assert rig_registrar(rig=rig, local=False) is not None


def test_calibrate_never_replaces_a_rig_file_with_a_failed_one(tmp_path, capsys):
    """One frame cannot calibrate (two confident frames are needed): the existing rig file stays as it was and the
    failed result goes beside it; a path that is not .json is refused before any work."""
    _write_rig_frames(tmp_path, 2)
    good = tmp_path / "rig.json"
    good.write_text('{"kept": true}')
    code = cli.main(["calibrate", "--ir-dir", str(tmp_path / "ir"), "--vis-dir", str(tmp_path / "vi"),
                     "-o", str(good), "--limit", "1"])
    assert code == 1
    assert json.loads(good.read_text()) == {"kept": True}
    assert json.loads((tmp_path / "rig.failed.json").read_text())["verdict"] == "failed"
    frame = next((tmp_path / "ir").iterdir())
    before = frame.read_bytes()
    assert cli.main(["calibrate", "--ir-dir", str(tmp_path / "ir"), "--vis-dir", str(tmp_path / "vi"),
                     "-o", str(frame)]) == 2
    assert frame.read_bytes() == before
    assert "rig file is JSON" in capsys.readouterr().err


def test_a_failed_rig_is_refused_by_the_library_too(tmp_path):
    from alignfuse import load_pipeline

    rig = RigModel(np.eye(3), VIS, VIS, verdict="failed", reason="no frames", source="r.json")
    with pytest.raises(UserError, match="this calibration failed"):
        load_pipeline("default", rig=rig)


def test_a_constant_frame_is_no_estimate_and_costs_no_search():
    from alignfuse.registration import GlobalSearchRegistrar
    from alignfuse.registration.rig import consensus, estimate_frame

    class NoSearch(GlobalSearchRegistrar):
        def register_pair(self, *args, **kwargs):
            raise AssertionError("a constant frame was searched")

    vis = np.random.default_rng(0).random((48, 64)).astype(np.float32)
    capped = estimate_frame(NoSearch(), "cap", np.full((48, 64), 0.3, np.float32), vis, None)
    assert capped.fallback is not None and capped.suspect and capped.confidence == 0.0
    # same-size frames kept as delivered vote for an aligned rig; a lens cap does not
    rig = consensus([capped] * 3, (64, 48), (64, 48))
    assert rig.verdict == "failed" and "covered lens" in rig.reason
