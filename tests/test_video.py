"""Video mode: two tiny camera videos written here with PyAV, fused frame by frame into a video."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from alignfuse import io  # noqa: E402
from alignfuse.cli import main  # noqa: E402

W, H = 64, 48
FAST = ["--model", "identity+average"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _texture(seed: int, colour: bool, h: int = H, w: int = W) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random((h, w, 3)), (2, 2, 0))
    img = (img - img.min()) / (img.max() - img.min())
    if not colour:
        img = np.repeat(img.mean(2, keepdims=True), 3, 2)
    return (img * 255).astype(np.uint8)


def write_video(path: Path, n: int, colour: bool, rate: int = 10, size: tuple[int, int] = (W, H),
                codec: str = "libx264", pix_fmt: str = "yuv420p", seed: int = 0) -> Path:
    """n frames of smooth noise (grey when not ``colour``); ``pix_fmt="gray16le"`` (with ffv1): a 16-bit IR."""
    container = av.open(str(path), "w")
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = size
    stream.pix_fmt = pix_fmt
    for i in range(n):
        img = _texture(seed + i, colour, size[1], size[0])
        if pix_fmt == "gray16le":
            frame = av.VideoFrame.from_ndarray((img[..., 0].astype(np.uint16) * 12 + 7000), format="gray16le")
        else:
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)
    container.close()
    return path


def read_video(path: Path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.average_rate


def _warnings(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("alignfuse: warning:")]


def test_video_fused_to_a_video_with_the_same_frame_count(tmp_path, capsys):
    ir = write_video(tmp_path / "ir.mp4", 4, colour=False)
    vis = write_video(tmp_path / "vis.mp4", 4, colour=True, seed=50)
    code, out, err = run(capsys, "fuse", "--ir-video", ir, "--vis-video", vis, "-o", tmp_path / "f.mp4",
                         "--save-frames", tmp_path / "frames", *FAST)
    assert code == 0, err
    assert "fused 4/4 frames" in out and not _warnings(err)
    frames, rate = read_video(tmp_path / "f.mp4")
    assert len(frames) == 4 and frames[0].shape == (H, W, 3) and rate == 10
    saved = sorted((tmp_path / "frames").iterdir())
    assert [p.name for p in saved] == [f"frame_{i:06d}.png" for i in range(4)]
    first = io.read_image(saved[0]).data
    assert first.shape == (H, W, 3)
    assert np.abs(first[..., 0] - first[..., 2]).mean() > 0.01  # the visible colour is kept
    # the video holds the saved frames (lossy codec: close, not equal)
    assert np.abs(frames[0].astype(float) / 255 - first).mean() < 0.03


def test_different_lengths_and_rates_follow_the_pairing_policy(tmp_path, capsys):
    ir = write_video(tmp_path / "ir.mp4", 3, colour=False, rate=10)
    vis = write_video(tmp_path / "vis.mp4", 5, colour=True, rate=12)
    code, _, err = run(capsys, "fuse", "--ir-video", ir, "--vis-video", vis, "-o", tmp_path / "f.mkv", *FAST)
    assert code == 0, err
    warns = _warnings(err)
    assert len(warns) == 2, warns  # once for the lengths, once for the rates
    assert "ir.mp4 has 3 frames and vis.mp4 5" in warns[0] and "paired by index" in warns[0]
    assert "frame rates differ" in warns[1] and "12 fps" in warns[1]
    frames, rate = read_video(tmp_path / "f.mkv")
    assert len(frames) == 3 and rate == 12  # stops at the shorter; the visible stream's rate
    # a --limit within both streams: their lengths do not matter, their rates still do
    code, _, err = run(capsys, "fuse", "--ir-video", ir, "--vis-video", vis, "-o", tmp_path / "g.mkv", "--limit", "2",
                       *FAST)
    assert code == 0 and [w for w in _warnings(err) if "frames are paired" in w and "has 3 frames" in w] == []
    assert any("frame rates differ" in w for w in _warnings(err))


def test_sixteen_bit_ir_of_unknown_length_and_odd_size_and_limit(tmp_path, capsys):
    """A 16-bit grey FFV1 IR (its mkv states no frame count) longer than the visible video: the shorter end is
    warned about when reached; an odd visible size is padded in the video, exact in the saved frames."""
    ir = write_video(tmp_path / "ir.mkv", 5, colour=False, codec="ffv1", pix_fmt="gray16le", size=(40, 30))
    vis = write_video(tmp_path / "vis.mp4", 3, colour=True, size=(W - 1, H - 1), codec="mpeg4")
    code, out, err = run(capsys, "fuse", "--ir-video", ir, "--vis-video", vis, "-o", tmp_path / "f.mp4",
                         "--save-frames", tmp_path / "fr", *FAST)
    assert code == 0, err
    assert "resampled onto the 63x47 visible grid" in err
    assert any("vis.mp4 ended after 3 frames" in w for w in _warnings(err)), err
    frames, _ = read_video(tmp_path / "f.mp4")
    assert len(frames) == 3 and frames[0].shape == (H, W, 3)
    assert io.read_image(tmp_path / "fr" / "frame_000000.png").data.shape == (H - 1, W - 1, 3)
    code, out, err = run(capsys, "fuse", "--ir-video", ir, "--vis-video", vis, "-o", tmp_path / "g.mp4",
                         "--limit", "2", *FAST)
    assert code == 0 and "fused 2/2 frames" in out and len(read_video(tmp_path / "g.mp4")[0]) == 2


@pytest.mark.parametrize("problem", ["garbage", "truncated", "missing"])
def test_corrupt_or_missing_video_is_a_one_line_error(tmp_path, capsys, problem):
    vis = write_video(tmp_path / "vis.mp4", 2, colour=True)
    ir = tmp_path / "ir.mp4"
    if problem == "garbage":
        ir.write_bytes(b"not a video at all" * 50)
    elif problem == "truncated":  # an mp4 cut in half has no index (moov atom)
        data = write_video(ir, 3, colour=False).read_bytes()
        ir.write_bytes(data[: len(data) // 2])
    code, _, err = run(capsys, "fuse", "--ir-video", ir, "--vis-video", vis, "-o", tmp_path / "f.mp4", *FAST)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("alignfuse: error:") and "ir.mp4" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "f.mp4").exists()


def test_video_options_are_checked_before_work(tmp_path, capsys):
    ir = write_video(tmp_path / "ir.mp4", 2, colour=False)
    vis = write_video(tmp_path / "vis.mp4", 2, colour=True)
    out = tmp_path / "f.mp4"
    cases = [(["--ir-video", ir, "-o", out], "both --ir-video and --vis-video"),
             (["--ir-video", ir, "--vis-video", vis, "--ir-dir", tmp_path, "-o", out], "not several"),
             (["--ir-video", ir, "--vis-video", vis, "--field", tmp_path / "x.npy", "-o", out], "video mode"),
             ([ir, vis, "--save-frames", tmp_path / "fr", "-o", tmp_path / "f.png"], "applies to video mode"),
             (["--ir-video", ir, "--vis-video", vis, "-o", vis], "would overwrite an input"),
             (["--ir-video", ir, "--vis-video", vis, "-o", tmp_path / "f.gif"], "'.gif'")]
    for argv, expected in cases:
        code, _, err = run(capsys, "fuse", *argv, *FAST)
        assert code == 2 and expected in err and len(err.splitlines()) == 1, (argv, err)
    assert not out.exists()


def test_a_failed_frame_is_skipped_and_the_rest_kept(tmp_path, capsys, monkeypatch):
    """One frame fails in the pipeline: the others are written (the container closed properly, the later frames
    keep their times), the failure is one line naming the frame, exit 1."""
    from alignfuse import video

    ir = write_video(tmp_path / "ir.mp4", 4, colour=False)
    vis = write_video(tmp_path / "vis.mp4", 4, colour=True)
    original = video.FrameJob.run

    def flaky(self, pipeline):
        if self.name == "frame_000001":
            raise RuntimeError("boom")
        return original(self, pipeline)

    monkeypatch.setattr(video.FrameJob, "run", flaky)
    code, out, err = run(capsys, "fuse", "--ir-video", ir, "--vis-video", vis, "-o", tmp_path / "f.mp4",
                         "--save-frames", tmp_path / "fr", *FAST)
    assert code == 1 and "fused 3/4 frames" in out
    failed = [ln for ln in err.splitlines() if "frame_000001" in ln]
    assert len(failed) == 1 and "internal error (RuntimeError: boom)" in failed[0]
    with av.open(str(tmp_path / "f.mp4")) as container:
        stream = container.streams.video[0]
        times = [round(float(f.time), 3) for f in container.decode(stream)]
    assert times == [0.0, 0.2, 0.3]  # frame 1 missing: frame 0 stays on screen, the others keep their times
    assert sorted(p.name for p in (tmp_path / "fr").iterdir()) == [
        "frame_000000.png", "frame_000002.png", "frame_000003.png"]


def test_video_with_two_workers_is_byte_identical_to_serial(tmp_path, capsys):
    ir = write_video(tmp_path / "ir.mp4", 5, colour=False)
    vis = write_video(tmp_path / "vis.mp4", 5, colour=True, seed=9)
    outs = {}
    # The guarantee holds at one torch thread count (batch.py): the serial run would otherwise use every core.
    for label, extra in (("serial", []), ("pool", ["--workers", "2"])):
        code, out, err = run(capsys, "fuse", "--ir-video", ir, "--vis-video", vis, "-o", tmp_path / f"{label}.mp4",
                             "--save-frames", tmp_path / label, "--model", "phase+average", "--threads", "1", *extra)
        assert code == 0, err
        outs[label] = out.replace(label, "X")
    assert outs["serial"] == outs["pool"]
    names = sorted(p.name for p in (tmp_path / "serial").iterdir())
    assert len(names) == 5 and names == sorted(p.name for p in (tmp_path / "pool").iterdir())
    for name in names:  # the frames first: an encoder difference alone would show only in the video bytes
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "pool" / name).read_bytes(), name
    assert (tmp_path / "serial.mp4").read_bytes() == (tmp_path / "pool.mp4").read_bytes()


def test_save_frames_warns_about_frames_of_an_earlier_run(tmp_path, capsys):
    ir = write_video(tmp_path / "ir.mp4", 4, colour=False)
    vis = write_video(tmp_path / "vis.mp4", 4, colour=True, seed=50)
    args = ["fuse", "--ir-video", ir, "--vis-video", vis, "--save-frames", tmp_path / "fr", *FAST]
    assert run(capsys, *args, "-o", tmp_path / "a.mp4")[0] == 0
    code, _, err = run(capsys, *args, "-o", tmp_path / "b.mp4", "--limit", "2")
    warns = [w for w in _warnings(err) if "from an earlier run" in w]
    assert code == 0 and len(warns) == 1, err
    assert "2 file(s)" in warns[0] and "frame_000002.png, frame_000003.png" in warns[0]
