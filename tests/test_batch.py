"""Batch runs: serial, a local process pool (--workers) and Ray (--ray) give the same files, order and summary."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alignfuse import batch, io
from alignfuse.cli import main
from alignfuse.errors import UserError

FAST = ["--model", "phase+average", "--threads", "1"]  # byte identity holds at one torch thread count


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _textured(h: int, w: int, seed: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(np.random.default_rng(seed).random((h, w)), 2.0)
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """Four good 64x48 pairs (one with a colour visible image) and one corrupt infrared file."""
    root = tmp_path_factory.mktemp("pairs")
    for i in range(5):
        io.write_image(root / "ir" / f"p{i}.png", _textured(48, 64, i))
        vis = _textured(48, 64, i + 10)
        io.write_image(root / "vi" / f"p{i}.png", np.stack([vis, vis ** 2, 1 - vis], -1) if i == 3 else vis)
    (root / "ir" / "p2.png").write_bytes(b"\x89PNG not really")
    return root / "ir", root / "vi"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _report_lines(err: str) -> list[str]:
    """stderr without the progress bar."""
    return [ln for ln in err.splitlines() if ln.strip() and "pair/s" not in ln and "it/s" not in ln and "%|" not in ln]


def _fuse_folder(capsys, folders, out: Path, *extra) -> tuple[int, str, list[str]]:
    ir_dir, vis_dir = folders
    code, stdout, err = run(capsys, "fuse", "--ir-dir", ir_dir, "--vis-dir", vis_dir, "-o", out, "--save-aligned",
                            "--save-field", *FAST, *extra)
    return code, stdout.replace(str(out), "OUT"), _report_lines(err)


def _check_same_as_serial(capsys, folders, tmp_path, *extra) -> None:
    """The parallel run writes the serial run's bytes, prints its summary; the corrupt pair is one failure line."""
    serial = _fuse_folder(capsys, folders, tmp_path / "serial")
    parallel = _fuse_folder(capsys, folders, tmp_path / "parallel", *extra)
    assert serial == parallel
    code, stdout, err = parallel
    assert code == 1 and "fused 4/5 pairs with phase+average -> OUT" in stdout
    failed = [ln for ln in err if "p2" in ln]
    assert len(failed) == 1 and "p2.png" in failed[0] and "cannot read image" in failed[0], err
    files = _files(tmp_path / "serial")
    assert len(files) == 12 and "p2.png" not in files  # 4 fused + 4 aligned + 4 fields
    assert files == _files(tmp_path / "parallel")


def test_two_workers_write_the_serial_bytes_and_report_failures(folders, tmp_path, capsys):
    _check_same_as_serial(capsys, folders, tmp_path, "--workers", "2")


def test_a_pipeline_workers_cannot_build_is_a_user_error(folders, tmp_path, capsys):
    ir_dir, vis_dir = folders
    code, _, err = run(capsys, "fuse", "--ir-dir", ir_dir, "--vis-dir", vis_dir, "-o", tmp_path / "o", "--model",
                       "nope", "--workers", "2")
    assert code == 2 and len(_report_lines(err)) == 1 and "unknown model 'nope'" in err
    assert not (tmp_path / "o").exists()


def test_parallel_options_outside_batch_modes_and_missing_extras(folders, tmp_path, capsys, monkeypatch):
    ir_dir, vis_dir = folders
    code, _, err = run(capsys, "fuse", ir_dir / "p0.png", vis_dir / "p0.png", "-o", tmp_path / "f.png",
                       "--workers", "2", *FAST)
    assert code == 2 and "apply to folder mode" in err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, _, err = run(capsys, "fuse", "--ir-dir", ir_dir, "--vis-dir", vis_dir, "-o", tmp_path / "o", "--ray",
                       "auto", *FAST)
    assert code == 2 and len(_report_lines(err)) == 1 and "pip install 'alignfuse[cluster]'" in err
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    code, _, err = run(capsys, "fuse", "--ir-video", tmp_path / "ir.mp4", "--vis-video", tmp_path / "vis.mp4", "-o",
                       tmp_path / "f.mp4", *FAST)
    assert code == 2 and len(_report_lines(err)) == 1 and "pip install 'alignfuse[video]'" in err


# --------------------------------------------------------------------------------------- the runner itself
class SleepJob:
    """Sleeps, then says which process and which pipeline object ran it (or fails as asked)."""

    def __init__(self, name: str, seconds: float, fail: str | None = None) -> None:
        self.name, self.seconds, self.fail = name, seconds, fail

    def run(self, pipeline):
        time.sleep(self.seconds)
        if self.fail == "user":
            raise UserError("x.png: cannot read image")
        if self.fail == "bug":
            raise KeyError("oops")
        return os.getpid(), id(pipeline)


def test_pool_keeps_input_order_builds_one_pipeline_per_worker_and_reports_failures():
    spec = batch.PipelineSpec("identity+average")
    jobs = [SleepJob(f"j{i}", 0.3 if i % 3 == 0 else 0.0, fail={4: "user", 5: "bug"}.get(i)) for i in range(8)]
    with batch.open_runner(spec, batch.Parallel(workers=2)) as runner:
        outcomes = list(runner.map(jobs))
    assert [o.index for o in outcomes] == list(range(8)) and [o.name for o in outcomes] == [j.name for j in jobs]
    assert outcomes[4].error == "j4: x.png: cannot read image" and not outcomes[4].internal
    assert outcomes[5].error == "j5: internal error (KeyError: 'oops')" and outcomes[5].internal
    ran = {o.value for o in outcomes if o.ok}
    pids = {pid for pid, _ in ran}
    assert len(pids) == 2 and os.getpid() not in pids
    assert len(ran) == len(pids)  # one pipeline object per worker process, reused for every job


def test_interrupt_stops_the_workers_without_waiting_for_their_jobs():
    jobs = [SleepJob("quick", 0.0)] + [SleepJob(f"slow{i}", 60.0) for i in range(3)]
    t0 = time.perf_counter()
    processes = []
    with pytest.raises(KeyboardInterrupt):
        with batch.open_runner(batch.PipelineSpec("identity+average"), batch.Parallel(workers=2)) as runner:
            for outcome in runner.map(jobs):
                processes = list(runner._pool._processes.values())
                raise KeyboardInterrupt  # as Ctrl-C in the driver
    for p in processes:
        p.join(timeout=10)
    assert processes and not any(p.is_alive() for p in processes)
    assert time.perf_counter() - t0 < 30


# ---------------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="error")
    yield ray
    ray.shutdown()


def test_ray_writes_the_serial_bytes_and_reports_failures(ray_session, folders, tmp_path, capsys):
    _check_same_as_serial(capsys, folders, tmp_path, "--ray", "auto", "--workers", "2")
