"""Video mode: fuse an infrared and a visible video frame by frame (PyAV: ``pip install 'alignfuse[video]'``).

Frame pairing policy (also in the README and ``alignfuse fuse --help``):

* frames are paired **by index** (frame *i* of the IR with frame *i* of the visible video), not by time stamp;
* the run **stops at the shorter stream** (or after ``limit`` pairs); a warning says so once when the frame
  counts differ (when a container does not store its frame count, when the shorter stream ends);
* when the frame rates differ a warning says so once; the **output frame rate is the visible stream's**
  (25 fps when the visible container does not say), frame *i* at time ``i / rate``;
* frames are independent (no temporal state), so they can run on several workers; the output keeps the order.

Pixels: IR frames are read as grey, at 16 bits when the stream's pixel format is a grey format deeper than 8
bits (``gray10le``..``gray16le``, e.g. FFV1 or raw video; normalised with ``--ir-norm``, per frame, as for
16-bit images) and as 8-bit luma otherwise (``/255``); a colour IR stream is reduced to its luma. The visible
colour is kept (RGB; a grey visible stream stays grey). An IR of another size is resampled onto the visible grid
(see :func:`alignfuse.io.load_pair`). Audio and other streams are not copied.

Output: ``libx264`` (H.264, constant quantiser 18) when PyAV's ffmpeg has it, else ``mpeg4``; ``yuv420p``; an odd width or
height is padded by one replicated column / row (``yuv420p`` needs even sizes); ``--save-frames`` PNGs keep the
exact size. A frame the pipeline fails on is skipped (the previous frame stays on screen for its duration; the
other frames keep their times) and listed at the end; a decoding error stops reading there. Either way the
frames fused so far stay in a properly closed file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field as dc_field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .batch import Report, Runner, stale_files, stale_warning
from .errors import MissingDependency, UserError, suspect_detail

__all__ = ["FrameJob", "FrameResult", "VideoInput", "VideoWriter", "open_video", "fuse_video", "choose_codec",
           "check_output", "pairing_notes", "frame_name", "CONTAINERS", "DEFAULT_RATE"]

#: Output container formats by file extension.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}
#: Output frame rate when the visible container states none.
DEFAULT_RATE = Fraction(25)
_DEEP_GREY = ("gray9", "gray10", "gray12", "gray14", "gray16")  # pixel-format prefixes kept at 16 bits


def _av():
    try:
        import av
    except ImportError as exc:
        raise MissingDependency("video mode needs PyAV, which is not installed: pip install 'alignfuse[video]'") \
            from exc
    return av


ENCODER_THREADS = 2  # fixed, so that the encoded bytes do not depend on the machine (see VideoWriter)


def choose_codec() -> str:
    """``libx264`` when PyAV's bundled ffmpeg can encode with it, else ``mpeg4``."""
    av = _av()
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


# ----------------------------------------------------------------------------------------------- reading
@dataclass
class VideoInput:
    """An open input video: its first video stream and what the pairing policy needs.

    frames: the frame count the container states (0 when it does not); rate: frames per second (None when
    unknown); size: (width, height); deep_grey: the IR is read at 16 bits."""

    path: Path
    container: Any
    stream: Any
    frames: int
    rate: Fraction | None
    size: tuple[int, int]
    pix_fmt: str

    @property
    def deep_grey(self) -> bool:
        return self.pix_fmt.startswith(_DEEP_GREY)

    @property
    def grey(self) -> bool:
        return self.pix_fmt.startswith("gray") or self.pix_fmt in ("y400a", "ya8", "ya16le", "ya16be")

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> "VideoInput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def frames_as_arrays(self, kind: str, ir_norm: str = "percentile") -> Iterator[np.ndarray]:
        """Decode -> float32 frames in [0, 1]: IR ``(H, W)``; visible ``(H, W, 3)`` RGB, or ``(H, W)`` if grey.

        A decoding error is a :class:`UserError` naming the file and the frame."""
        from . import io

        av = _av()
        index = 0
        try:
            for frame in self.container.decode(self.stream):
                if kind == "ir" and self.deep_grey:
                    yield io.normalise(frame.to_ndarray(format="gray16le"), 16, ir_norm)[0]
                elif kind == "ir" or self.grey:
                    yield frame.to_ndarray(format="gray").astype(np.float32) / np.float32(255)
                else:
                    yield frame.to_ndarray(format="rgb24").astype(np.float32) / np.float32(255)
                index += 1
        except av.FFmpegError as exc:
            raise UserError(f"{self.path}: cannot decode frame {index} ({_reason(exc)})") from exc


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split())


def open_video(path: str | Path) -> VideoInput:
    """Open a video file for reading; a missing, corrupt or stream-less file is a one-line :class:`UserError`."""
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such video file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read video ({_reason(exc)})") from exc
    if not container.streams.video:
        container.close()
        raise UserError(f"{path}: contains no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame-threaded decoding; decoded pixels do not depend on it
    ctx = stream.codec_context
    if not ctx.width or not ctx.height:
        container.close()
        raise UserError(f"{path}: video stream has no frame size (corrupt or unsupported)")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return VideoInput(path, container, stream, int(stream.frames or 0), Fraction(rate) if rate else None,
                      (int(ctx.width), int(ctx.height)), str(ctx.pix_fmt or (ctx.format.name if ctx.format else "")))


# ----------------------------------------------------------------------------------------------- writing
def check_output(path: str | Path, inputs: list[Path]) -> None:
    """Fail before any work when the output video has an unknown extension or is one of the inputs."""
    path = Path(path)
    if path.suffix.lower() not in CONTAINERS:
        raise UserError(f"{path}: unsupported video extension {path.suffix!r} (use one of {', '.join(CONTAINERS)})")
    if any(path.resolve() == Path(p).resolve() for p in inputs):
        raise UserError(f"{path}: would overwrite an input video; choose another path for the fused video")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; -o is the fused video file in video mode")


class VideoWriter:
    """Encode float frames in [0, 1] ((H, W) grey or (H, W, 3) RGB) into a video file at a constant rate.

    Frame ``index`` is shown at ``index / rate``: an index left out holds the previous frame on screen. The
    container is closed (encoder flushed) by :meth:`close` / the ``with`` block, also after an error."""

    def __init__(self, path: str | Path, size: tuple[int, int], rate: Fraction, codec: str | None = None) -> None:
        av = _av()
        self.path = Path(path)
        fmt = CONTAINERS.get(self.path.suffix.lower())
        if fmt is None:
            raise UserError(f"{self.path}: unsupported video extension {self.path.suffix!r} "
                            f"(use one of {', '.join(CONTAINERS)})")
        self.size = size
        self.padded = (size[0] + size[0] % 2, size[1] + size[1] % 2)
        self.codec = codec or choose_codec()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.container = av.open(str(self.path), mode="w", format=fmt)
        except (av.FFmpegError, OSError) as exc:
            raise UserError(f"{self.path}: cannot write video ({_reason(exc)})") from exc
        self.stream = self.container.add_stream(self.codec, rate=rate)
        self.stream.width, self.stream.height = self.padded
        self.stream.pix_fmt = "yuv420p"
        # A fixed encoder thread count: both encoders' bitstreams depend on it, and "auto" follows the CPUs
        # this process may use, so a video written under a worker pool or on another machine would differ.
        # A constant quantiser, not CRF: CRF's adaptive quantisation and macroblock tree work on floating-point
        # statistics, and the same frames gave different bitstreams in about one run in six (AMD EPYC VM, one
        # process fusing a clip several times); with qp 18 every run was identical.
        if self.codec == "libx264":
            self.stream.options = {"qp": "18", "preset": "medium", "threads": str(ENCODER_THREADS)}
        else:  # mpeg4: a fixed quantiser, about as sharp
            self.stream.codec_context.bit_rate = int(12 * self.padded[0] * self.padded[1])
            self.stream.codec_context.thread_count = ENCODER_THREADS
        self.stream.codec_context.time_base = Fraction(1) / rate
        self.written = 0
        self._closed = False

    def write(self, index: int, frame: np.ndarray) -> None:
        """Encode ``frame`` (float32 (H, W) or (H, W, 3) in [0, 1]) as frame number ``index``."""
        av = _av()
        q = np.floor(np.clip(frame.astype(np.float64), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)  # as io.write_image
        pad_w, pad_h = self.padded[0] - q.shape[1], self.padded[1] - q.shape[0]
        if pad_w or pad_h:
            q = np.pad(q, ((0, pad_h), (0, pad_w)) + ((0, 0),) * (q.ndim - 2), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(q), format="rgb24" if q.ndim == 3 else "gray")
        vf.pts = index
        vf.time_base = self.stream.codec_context.time_base
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.written += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        finally:
            self.container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -------------------------------------------------------------------------------------------- frame jobs
@dataclass
class FrameResult:
    """fused: float32 (H, W) or (H, W, 3) on the visible grid; diagnostics: the registration's."""

    fused: np.ndarray
    diagnostics: dict = dc_field(default_factory=dict)


@dataclass
class FrameJob:
    """One frame pair in memory: ir (h, w) float32, vis (H, W) or (H, W, 3) float32, in [0, 1]."""

    name: str
    ir: np.ndarray
    vis: np.ndarray
    strict: bool = False

    def run(self, pipeline) -> FrameResult:
        from .api import fuse_arrays

        # arrays from Ray's object store arrive read-only (zero copy); torch.from_numpy would warn about them
        ir, vis = (a if a.flags.writeable else a.copy() for a in (self.ir, self.vis))
        result = fuse_arrays(ir, vis, pipeline, warn=False)
        if self.strict and result.diagnostics.get("suspect"):
            raise UserError(f"registration is suspect and --strict was given "
                            f"({suspect_detail(result.diagnostics)})")
        return FrameResult(result.fused.astype(np.float32, copy=False), result.diagnostics)


def frame_name(index: int) -> str:
    """``frame_000012``: the name of frame ``index`` in messages and ``--save-frames`` files."""
    return f"frame_{index:06d}"


def _rate_text(rate: Fraction | None) -> str:
    return "unknown fps" if rate is None else f"{float(rate):.3g} fps"


def pairing_notes(ir: VideoInput, vis: VideoInput, limit: int | None = None) -> tuple[list[str], list[str]]:
    """-> (notes, warnings) about how the two streams are paired, known before decoding (``limit``: the frames the run
    reads at most; a length difference beyond it does not matter)."""
    notes, warns = [], []
    if ir.size != vis.size:
        notes.append(f"{ir.path.name} (infrared): {ir.size[0]}x{ir.size[1]} frames resampled onto the "
                     f"{vis.size[0]}x{vis.size[1]} visible grid")
    within_limit = limit is None or min(ir.frames or 0, vis.frames or 0) < limit
    if ir.frames and vis.frames and ir.frames != vis.frames and within_limit:
        short, long_ = (ir, vis) if ir.frames < vis.frames else (vis, ir)
        warns.append(f"{ir.path.name} has {ir.frames} frames and {vis.path.name} {vis.frames}: frames are paired by "
                     f"index and the run stops at the end of {short.path.name} (the last {long_.frames - short.frames} "
                     f"frames of {long_.path.name} are not used)")
    if ir.rate and vis.rate and ir.rate != vis.rate:
        warns.append(f"frame rates differ ({ir.path.name} {_rate_text(ir.rate)}, {vis.path.name} "
                     f"{_rate_text(vis.rate)}): frames are paired by index, not by time; the output runs at "
                     f"{vis.path.name}'s {_rate_text(vis.rate)}")
    if vis.rate is None:
        warns.append(f"{vis.path.name} states no frame rate: the output runs at {_rate_text(DEFAULT_RATE)}")
    if vis.size[0] % 2 or vis.size[1] % 2:
        notes.append(f"{vis.path.name}: {vis.size[0]}x{vis.size[1]} is padded to an even size in the video by "
                     "replicating the last column / row (yuv420p); saved frames keep the exact size")
    return notes, warns


@dataclass
class VideoReport(Report):
    """A :class:`~alignfuse.batch.Report` of frames, plus what was written."""

    output: Path | None = None
    codec: str = ""
    rate: Fraction | None = None
    written: int = 0


def _frame_jobs(ir: VideoInput, vis: VideoInput, ir_norm: str, strict: bool, limit: int | None,
                problems: list[str], late_warnings: list[str]) -> Iterator[FrameJob]:
    """Frame pairs by index, stopping at the shorter stream or ``limit``; a decoding error stops there and is
    appended to ``problems``; a length difference the containers did not state goes to ``late_warnings``."""
    ir_frames = ir.frames_as_arrays("ir", ir_norm)
    vis_frames = vis.frames_as_arrays("vis")
    index = 0
    try:
        while limit is None or index < limit:
            a = next(ir_frames, None)
            b = next(vis_frames, None)
            if a is None or b is None:
                if (a is None) != (b is None) and not (ir.frames and vis.frames):  # not warned about at the start
                    short, long_ = (ir, vis) if a is None else (vis, ir)
                    late_warnings.append(f"{short.path.name} ended after {index} frames, {long_.path.name} has more: "
                                         f"frames are paired by index and the rest of {long_.path.name} is not used")
                return
            yield FrameJob(frame_name(index), a, b, strict)
            index += 1
    except UserError as exc:  # a decoding error: stop reading, keep what was fused
        problems.append(str(exc))
    finally:
        ir_frames.close()
        vis_frames.close()


def fuse_video(ir: VideoInput, vis: VideoInput, runner: Runner, output: str | Path, *,
               save_frames: str | Path | None = None, limit: int | None = None, ir_norm: str = "percentile",
               bit_depth: int = 8, strict: bool = False, progress: bool = True) -> VideoReport:
    """Fuse the frame pairs of ``ir`` and ``vis`` with ``runner`` (any :class:`~alignfuse.batch.Parallel`
    setting) into the video ``output`` (and PNGs ``save_frames/frame_000000.png``... at ``bit_depth``).

    Frames are written in order as their outcomes arrive; a failed frame is skipped (listed in the report)."""
    from tqdm import tqdm

    from . import io

    rate = vis.rate or DEFAULT_RATE
    known = min(n for n in (ir.frames, vis.frames) if n) if (ir.frames or vis.frames) else None
    total = min(known, limit) if known and limit else (known or limit)
    frames_dir = Path(save_frames) if save_frames is not None else None
    problems: list[str] = []
    late_warnings: list[str] = []
    report = VideoReport(output=Path(output), rate=rate)
    saved: list[Path] = []  # the --save-frames files of this run
    with VideoWriter(output, vis.size, rate) as writer:
        report.codec = writer.codec
        jobs = _frame_jobs(ir, vis, ir_norm, strict, limit, problems, late_warnings)
        bar = tqdm(total=total, desc=f"fuse video ({runner.name})", unit="frame", disable=not progress)
        try:
            for outcome in runner.map(jobs):
                if outcome.ok:
                    writer.write(outcome.index, outcome.value.fused)  # job i = frame pair i
                    if frames_dir is not None:
                        saved.append(io.write_image(frames_dir / f"{outcome.name}.png", outcome.value.fused,
                                                    bit_depth=bit_depth))
                report.add(outcome, suspect=bool(outcome.ok and outcome.value.diagnostics.get("suspect")))
                bar.update()
        finally:
            bar.close()
        report.written = writer.written
    if frames_dir is not None:
        stale = stale_files(frames_dir, "frame_*.png", saved)
        if stale:
            late_warnings.append(stale_warning(frames_dir, stale))
    for message in late_warnings:  # after the progress bar, so each stays one line
        warnings.warn(message, UserWarning)
    report.failures.extend(problems)
    return report
