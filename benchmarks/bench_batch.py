"""Throughput of batch fusion: serial vs a local process pool vs Ray, folder mode and video mode.

    python benchmarks/bench_batch.py [--limit 50] [--frames 60] [--model default] [--modes serial1,serial,pool2,ray2]

Prints a markdown table (with the date, the machine and this command) of:

* **folder mode**: the first ``--limit`` RoadScene test pairs (``../shared/data/roadscene``, names from
  ``test.txt``; images as stored, ~500x300), fused with ``--model`` through :mod:`alignfuse.batch` exactly as
  ``alignfuse fuse --ir-dir --vis-dir`` does (files read and written); pairs/s and s/pair;
* **video mode**: a generated ``--frames``-frame 640x480 IR/visible video pair (one RoadScene pair resized, the IR
  drifting by 1 px per frame against the visible, H.264), fused into a video as ``alignfuse fuse --ir-video``
  does; s/frame.

Modes: ``serial1`` (this process, 1 torch thread), ``serial`` (this process, torch's default threads),
``poolN`` (``--workers N``, 1 thread each), ``rayN`` (a local Ray instance with N CPUs, N actors, 1 thread each;
skipped when Ray is not installed). ``startup s`` is the time to start the workers and build the pipelines (and
Ray); the throughput columns exclude it. Every mode writes the same bytes (checked here for folder mode).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from alignfuse import batch, io

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "roadscene"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _parallel(mode: str) -> batch.Parallel:
    if mode == "serial1":
        return batch.Parallel(workers=1, threads=1)
    if mode == "serial":
        return batch.Parallel(workers=1)
    if mode.startswith("pool"):
        return batch.Parallel(workers=int(mode[4:]), threads=1)
    if mode.startswith("ray"):
        return batch.Parallel(workers=int(mode[3:]), ray="local", threads=1)
    raise SystemExit(f"unknown mode {mode!r}")


def _label(mode: str, p: batch.Parallel) -> str:
    threads = p.threads or torch.get_num_threads()
    kind = "Ray actors" if p.ray else ("processes" if not p.serial else "in-process")
    return f"{mode} ({p.workers or 1} {kind} x {threads} thread{'s' if threads > 1 else ''})"


def _timed_run(spec: batch.PipelineSpec, mode: str, work) -> tuple[float, float, int]:
    """-> (startup s, work s, items done); ``work(runner)`` returns the number of items done."""
    p = _parallel(mode)
    default_threads = torch.get_num_threads()
    ray = None
    t0 = time.perf_counter()
    try:
        if p.ray:
            import ray

            ray.init(num_cpus=p.workers, include_dashboard=False, logging_level="error")
        with batch.open_runner(spec, p) as runner:
            t1 = time.perf_counter()
            done = work(runner)
            t2 = time.perf_counter()
    finally:
        if ray is not None:
            ray.shutdown()
        torch.set_num_threads(default_threads)  # the serial modes set this process's threads
    return t1 - t0, t2 - t1, done


def _folder_jobs(names: list[str], out: Path) -> list[batch.PairJob]:
    pairs, unpaired = io.pair_folders(DATA / "ir", DATA / "vi", names=names)
    if unpaired:
        print(f"warning: {len(unpaired)} unpaired, e.g. {unpaired[0]}", file=sys.stderr)
    return [batch.PairJob(stem, ir, vis, out / f"{stem}.png") for stem, ir, vis in pairs]


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.glob("*.png")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:12]


def _make_videos(folder: Path, name: str, frames: int) -> tuple[Path, Path]:
    """640x480 H.264 IR (grey) and visible (colour) videos of ``frames`` frames; the IR drifts 1 px/frame."""
    import av
    import cv2

    pair = io.load_pair(*(next((DATA / sub).glob(f"{name}.*")) for sub in ("ir", "vi")))
    ir = cv2.resize(pair.ir, (680, 520), interpolation=cv2.INTER_CUBIC)
    vis = cv2.resize(pair.vis, (640, 480), interpolation=cv2.INTER_CUBIC)
    paths = folder / "ir.mp4", folder / "vis.mp4"
    containers = [av.open(str(p), "w") for p in paths]
    streams = []
    for c in containers:
        s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 640, 480, "yuv420p"
        streams.append(s)
    for i in range(frames):
        dx, dy = 20 + (i % 20) - 10, 20 + (i // 20) % 10 - 5
        ir_f = np.repeat(ir[dy:dy + 480, dx:dx + 640, None], 3, 2)
        for c, s, img in zip(containers, streams, (ir_f, vis)):
            q = np.floor(np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(q), format="rgb24")):
                c.mux(packet)
    for c, s in zip(containers, streams):
        for packet in s.encode(None):
            c.mux(packet)
        c.close()
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=50, help="RoadScene test pairs (default all 50)")
    ap.add_argument("--frames", type=int, default=60, help="video frames (default 60)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--modes", default="serial1,serial,pool2,ray2", help="comma-separated: serial1, serial, poolN, rayN")
    ap.add_argument("--skip-video", action="store_true")
    ap.add_argument("--skip-folder", action="store_true")
    args = ap.parse_args()

    modes = [m for m in args.modes.split(",") if m]
    try:
        import ray  # noqa: F401
    except ImportError:
        dropped = [m for m in modes if m.startswith("ray")]
        modes = [m for m in modes if not m.startswith("ray")]
        if dropped:
            print(f"Ray not installed: {', '.join(dropped)} skipped (pip install 'alignfuse[cluster]')", file=sys.stderr)
    spec = batch.PipelineSpec(args.model)
    names = io.read_split(DATA / "test.txt")[: args.limit]
    rows: list[str] = []
    digests: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_folder:
            for mode in modes:
                out = tmp / f"folder-{mode}"
                jobs = _folder_jobs(names, out)

                def work(runner, jobs=jobs):
                    return sum(o.ok for o in runner.map(jobs))

                startup, seconds, done = _timed_run(spec, mode, work)
                digests[mode] = _digest(out)
                rows.append(f"| folder, {done} pairs | {_label(mode, _parallel(mode))} | {startup:.1f} | "
                            f"{seconds:.1f} | {done / seconds:.3f} pairs/s | {seconds / max(done, 1):.3f} s/pair |")
                print(rows[-1], flush=True)
        if not args.skip_video:
            from alignfuse import video

            ir_path, vis_path = _make_videos(tmp, names[0], args.frames)
            for mode in modes:
                def work(runner, mode=mode):
                    with video.open_video(ir_path) as ir, video.open_video(vis_path) as vis:
                        report = video.fuse_video(ir, vis, runner, tmp / f"video-{mode}.mp4", progress=False)
                    return report.done

                startup, seconds, done = _timed_run(spec, mode, work)
                import av

                with av.open(str(tmp / f"video-{mode}.mp4")) as fused:  # the frames the output really holds
                    written = sum(1 for _ in fused.decode(video=0))
                rows.append(f"| video 640x480, {args.frames} frames in, {written} out | {_label(mode, _parallel(mode))} | "
                            f"{startup:.1f} | "
                            f"{seconds:.1f} | {done / seconds:.3f} frames/s | {seconds / max(done, 1):.3f} s/frame |")
                print(rows[-1], flush=True)
    same = len(set(digests.values())) <= 1
    print()
    print(f"## Batch throughput, `{args.model}` ({datetime.date.today().isoformat()})\n")
    print(f"Machine: {_cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads by default), Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}")
    print(f"Command: `{' '.join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])}`\n")
    print("| run | mode | startup s | work s | throughput | per item |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    if digests:
        print(f"\nFolder outputs identical across modes: {'yes' if same else 'NO'} "
              f"({', '.join(f'{m} {d}' for m, d in digests.items())})")


if __name__ == "__main__":
    main()
