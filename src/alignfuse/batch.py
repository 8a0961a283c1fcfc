"""Run one pipeline over many independent jobs: serially, on a local process pool, or on a Ray cluster.

A *job* is a small picklable object with a ``name`` and a ``run(pipeline)`` method (:class:`PairJob`: one
image pair read from and written to files; :class:`alignfuse.video.FrameJob`: one video frame pair in
memory). Every worker builds its pipeline **once**, from a :class:`PipelineSpec` (process-pool initializer,
or one Ray actor per worker), and then runs the jobs it is sent. The driver gets back one :class:`Outcome`
per job, **in input order**: the job's value (diagnostics, a fused frame...) or a one-line failure
(``"NAME: problem"``; user error vs internal error, as the CLI reports them), plus the warnings the job
raised, which the driver re-issues so that the command prints what a serial run prints.

Determinism: each worker sets ``torch.set_num_threads(threads)`` (default 1 thread per worker) before it
builds the pipeline; jobs share no state, so the outputs are byte-identical to a serial run at the same
torch thread count (``--threads``; a CPU reduction split over another number of threads may round its last
bit differently). The serial runner leaves torch's thread count alone unless ``threads`` is given.

Ctrl-C: workers ignore SIGINT; the driver stops submitting, terminates the pool (or kills its actors) and
re-raises ``KeyboardInterrupt``; outputs already written are complete (image writes are atomic).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import Any, Protocol

from .errors import MissingDependency, UserError, suspect_detail

__all__ = ["PipelineSpec", "Parallel", "Job", "Outcome", "Report", "PairJob", "Runner", "open_runner",
           "describe", "failure_line", "USER_ERRORS"]

# The CLI's policy (cli.USER_ERRORS): what the user can cause; anything else is an internal error (a bug).
USER_ERRORS = (UserError, OSError)


# ------------------------------------------------------------------------------------------------ specs
@dataclass
class PipelineSpec:
    """Everything a worker needs to build the pipeline: picklable, sent once to each worker.

    ``load()`` is ``alignfuse.api.load_pipeline(name, device=device, weights_dir=weights_dir, **options)``;
    ``options`` holds the extra keyword arguments of the pipeline factory (e.g. a rig description)."""

    name: str
    device: str | None = "cpu"
    weights_dir: str | None = None
    options: dict[str, Any] = dc_field(default_factory=dict)

    def load(self):
        """-> :class:`alignfuse.pipeline.Pipeline`."""
        from .api import load_pipeline

        return load_pipeline(self.name, device=self.device, weights_dir=self.weights_dir, **self.options)


@dataclass(frozen=True)
class Parallel:
    """Where jobs run. ``workers``: processes (or Ray actors); 1 without ``ray`` = serial, in this process.
    ``ray``: ``None`` (no Ray), ``"local"`` (start a private local Ray instance), ``"auto"`` or an address
    (``ray.init(address=...)``); when Ray is already initialised in this process it is used as it is.
    ``workers=None`` with Ray: one per ``threads`` CPUs of the cluster. ``threads``: torch threads per worker
    (``None``: 1 in workers, torch's default in serial mode)."""

    workers: int | None = 1
    ray: str | None = None
    threads: int | None = None

    @property
    def serial(self) -> bool:
        return self.ray is None and (self.workers or 1) <= 1


class Job(Protocol):
    """A unit of work: ``run(pipeline)`` returns a picklable value; ``name`` names it in failure lines."""

    name: str

    def run(self, pipeline) -> Any: ...


@dataclass
class WarningRecord:
    """A warning raised in a worker, re-issued by the driver (``warnings.warn_explicit``)."""

    message: str
    category: type
    filename: str
    lineno: int


@dataclass
class Outcome:
    """The result of job number ``index`` (input order): ``value`` when it worked, else ``error``, one line
    ``"NAME: problem"`` (``internal``: a bug rather than the user's doing)."""

    index: int
    name: str
    value: Any = None
    error: str | None = None
    internal: bool = False
    warnings: list[WarningRecord] = dc_field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Report:
    """What a batch command prints at the end: ``done`` of ``total`` items, suspect names, failure lines."""

    total: int = 0
    done: int = 0
    suspects: list[str] = dc_field(default_factory=list)
    failures: list[str] = dc_field(default_factory=list)

    def add(self, outcome: Outcome, suspect: bool = False) -> None:
        self.total += 1
        if outcome.ok:
            self.done += 1
            if suspect:
                self.suspects.append(outcome.name)
        else:
            self.failures.append(outcome.error)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe(exc: BaseException) -> tuple[str, bool]:
    """-> (one-line problem, internal?) for an exception, worded as the CLI words it (without a name)."""
    if isinstance(exc, USER_ERRORS):
        if isinstance(exc, OSError) and exc.filename:
            return _one_line(f"{exc.filename}: {exc.strerror or exc}"), False
        return _one_line(str(exc)), False
    return _one_line(f"internal error ({type(exc).__name__}: {exc})"), True


def failure_line(name: str, exc: BaseException) -> tuple[str, bool]:
    """-> (``"NAME: problem"``, internal?) for an exception raised by job ``name``."""
    message, internal = describe(exc)
    return f"{name}: {message}", internal


# --------------------------------------------------------------------------------------------- pair jobs
@dataclass
class PairJob:
    """Fuse one IR/VIS pair of files and write the outputs (paths as given, atomic writes).

    ``run`` returns the registration diagnostics (``dict``; ``"suspect"`` flags a doubtful registration);
    with ``strict`` a suspect registration is a :class:`UserError` instead. ``show_notes`` prints the input
    notes (conversions, resampling) on stderr, as single-pair mode does; otherwise they are returned in the
    diagnostics' ``"input_notes"`` (folder mode lists them after its progress bar)."""

    name: str
    ir: Path
    vis: Path
    output: Path
    aligned_output: Path | None = None
    field_output: Path | None = None
    ir_norm: str = "percentile"
    bit_depth: int = 8
    strict: bool = False
    resize_ir: bool = False
    show_notes: bool = False

    def load(self):
        """Read the pair (printing its notes with ``show_notes``) -> :class:`alignfuse.io.Pair`; a single-pair command
        reads it before it loads its networks, so a bad input is reported at once."""
        from . import io

        pair = io.load_pair(self.ir, self.vis, resize_ir=self.resize_ir, ir_norm=self.ir_norm)
        if self.show_notes:
            for note in pair.notes:  # each note names its file
                print(f"alignfuse: note: {note}", file=sys.stderr)
        return pair

    def run(self, pipeline, pair=None) -> dict:
        """Fuse the pair (read now unless ``pair``, from :meth:`load`, is given) and write the outputs."""
        from . import io
        from .api import fuse_arrays

        pair = self.load() if pair is None else pair
        result = fuse_arrays(pair.ir, pair.vis, pipeline, ir_size=pair.ir_size if pair.ir_resized else None,
                             warn=False)
        if self.strict and result.diagnostics.get("suspect"):
            raise UserError(f"{self.ir}: registration is suspect and --strict was given "
                            f"({suspect_detail(result.diagnostics)})")
        io.write_image(self.output, result.fused, bit_depth=self.bit_depth)
        if self.aligned_output is not None:
            io.write_image(self.aligned_output, result.aligned_ir, bit_depth=self.bit_depth)
        if self.field_output is not None:
            io.write_field(self.field_output, result.field)
        # the input notes travel back with the diagnostics, so a batch run can list them (workers print nothing)
        return {**result.diagnostics, "input_notes": [] if self.show_notes else list(pair.notes)}


def grouped_notes(notes: Sequence[str], keep: int = 2) -> list[str]:
    """Read notes of a batch (``"PATH (infrared): text"``), one line per distinct remark: a remark made about more
    than ``keep`` files (a fixed rig's IR resampled onto the visible grid, frame after frame) becomes ``"N files
    (infrared): text (e.g. PATH1, PATH2, ...)"``; order of first appearance."""
    groups: dict[str, list[str]] = {}
    for note in notes:
        path, sep, rest = note.partition(" (")
        key = f"({rest}" if sep else note
        groups.setdefault(key, []).append(path if sep else "")
    lines = []
    for key, paths in groups.items():
        if len(paths) <= keep or not all(paths):
            lines.extend(f"{p} {key}" if p else key for p in paths)
        else:
            lines.append(f"{len(paths)} files {key} (e.g. {', '.join(paths[:keep])}, ...)")
    return lines


def stale_files(folder: Path, pattern: str | Sequence[str], written: Iterable[Path]) -> list[Path]:
    """Files of ``folder`` matching ``pattern`` (or any of several) that this run did not write: outputs of an earlier
    run, which would look like part of this one (a shorter video's frames, a pair since removed from the inputs, an
    earlier run's other ``--ext``)."""
    if not folder.is_dir():
        return []
    fresh = {Path(p).resolve() for p in written}
    found = {p for pat in ([pattern] if isinstance(pattern, str) else pattern) for p in folder.glob(pat)}
    return sorted(p for p in found if p.is_file() and p.resolve() not in fresh)


def stale_warning(folder: Path, stale: Sequence[Path]) -> str:
    """One line about :func:`stale_files`' result (non-empty)."""
    shown = ", ".join(p.name for p in stale[:3]) + (", ..." if len(stale) > 3 else "")
    return (f"{folder}: {len(stale)} file(s) from an earlier run left beside this run's outputs ({shown}); "
            "delete them or write into an empty folder")


# ------------------------------------------------------------------------------------------ worker side
# One pipeline per worker process, built by _worker_setup (pool initializer / Ray actor constructor).
_PIPE: Any = None
_SETUP_FAILURE: tuple[str, bool] | None = None  # describe(exc) when the pipeline could not be built
_SETUP_WARNINGS: list[WarningRecord] = []


def _records(caught: list[warnings.WarningMessage]) -> list[WarningRecord]:
    return [WarningRecord(str(w.message), w.category, w.filename, w.lineno) for w in caught]


def _worker_setup(spec: PipelineSpec, threads: int | None, ignore_sigint: bool = True) -> None:
    """Set torch's threads, build the pipeline once; a failure is kept and reported with every job."""
    global _PIPE, _SETUP_FAILURE, _SETUP_WARNINGS
    if ignore_sigint:  # the driver handles Ctrl-C and terminates the workers
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads or 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _PIPE = spec.load()
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which raises it there
            _SETUP_FAILURE = describe(exc)
    _SETUP_WARNINGS = _records(caught)


@dataclass
class _Hello:
    """A worker's answer to the driver's first call: the pipeline's name, or why it could not be built."""

    name: str | None
    failure: tuple[str, bool] | None
    warnings: list[WarningRecord]


def _worker_hello() -> _Hello:
    return _Hello(getattr(_PIPE, "name", None), _SETUP_FAILURE, _SETUP_WARNINGS)


def _execute(pipe: Any, index: int, job: Job, record: bool) -> Outcome:
    """Run one job, catching its exception as a failure line; ``record``: collect its warnings."""
    name = getattr(job, "name", str(index))
    if pipe is None:
        message, internal = _SETUP_FAILURE or ("internal error (no pipeline in this worker)", True)
        return Outcome(index, name, error=f"{name}: {message}", internal=internal)
    with warnings.catch_warnings(record=record) as caught:
        if record:
            warnings.simplefilter("always")
        try:
            outcome = Outcome(index, name, value=job.run(pipe))
        except Exception as exc:  # noqa: BLE001 - one bad job must not stop the batch
            message, internal = failure_line(name, exc)
            outcome = Outcome(index, name, error=message, internal=internal)
    if record:
        outcome.warnings = _records(caught)
    return outcome


def _worker_run(index: int, job: Job) -> Outcome:
    return _execute(_PIPE, index, job, record=True)


class _RayWorker:
    """One Ray actor: builds the pipeline in its constructor, then runs jobs (wrapped with ``ray.remote``)."""

    def __init__(self, spec: PipelineSpec, threads: int | None) -> None:
        _worker_setup(spec, threads, ignore_sigint=False)

    def hello(self) -> _Hello:
        return _worker_hello()

    def run(self, index: int, job: Job) -> Outcome:
        return _worker_run(index, job)


# ------------------------------------------------------------------------------------------ driver side
class Runner:
    """Runs jobs and yields their :class:`Outcome` in input order; use through :func:`open_runner`.

    ``name``: the pipeline's name (for progress bars and summaries), known once the runner is open."""

    window_per_worker = 2  # jobs in flight or finished-but-not-yet-yielded, per worker (bounds memory)

    def __init__(self, spec: PipelineSpec, parallel: Parallel) -> None:
        self.spec = spec
        self.parallel = parallel
        self.name: str = spec.name
        self.workers = 1
        self._warning_registry: dict = {}

    # context management: start the workers (raising a setup error in the driver), stop them at the end
    def __enter__(self) -> "Runner":
        self._start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop(abort=exc_type is not None)

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self, abort: bool) -> None:
        pass

    def _greet(self, hello: _Hello) -> None:
        """Re-issue the load warnings once; raise a pipeline that cannot be built as in a serial run."""
        self.reissue(hello.warnings)
        if hello.failure is not None:
            message, internal = hello.failure
            raise RuntimeError(f"building the pipeline in a worker: {message}") if internal else UserError(message)
        self.name = hello.name or self.spec.name

    def reissue(self, records: list[WarningRecord]) -> None:
        """Issue warnings caught in a worker here, with their origin, so the usual filters apply once."""
        for w in records:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, registry=self._warning_registry)

    def map(self, jobs: Iterable[Job]) -> Iterator[Outcome]:
        """Run ``jobs`` (any iterable, consumed lazily) -> outcomes in input order."""
        window = max(1, self.workers * self.window_per_worker)
        source = enumerate(jobs)
        in_flight: dict[int, tuple[Any, str]] = {}
        finished: dict[int, Outcome] = {}
        next_index, exhausted = 0, False
        while True:
            while not exhausted and len(in_flight) + len(finished) < window:
                try:
                    index, job = next(source)
                except StopIteration:
                    exhausted = True
                    break
                in_flight[index] = (self._submit(index, job), getattr(job, "name", str(index)))
            if next_index in finished:
                outcome = finished.pop(next_index)
                next_index += 1
                self.reissue(outcome.warnings)
                yield outcome
                continue
            if not in_flight:
                return
            for outcome in self._wait(in_flight):
                del in_flight[outcome.index]
                finished[outcome.index] = outcome

    def _submit(self, index: int, job: Job) -> Any:
        raise NotImplementedError

    def _wait(self, in_flight: dict[int, tuple[Any, str]]) -> list[Outcome]:
        """Block until at least one job in flight is done; -> their outcomes."""
        raise NotImplementedError


class _SerialRunner(Runner):
    """In this process: the pipeline is built here, warnings and notes print directly."""

    window_per_worker = 1  # run each job when its outcome is wanted: progress and side effects in order

    def _start(self) -> None:
        if self.parallel.threads:
            import torch

            torch.set_num_threads(self.parallel.threads)
        self._pipe = self.spec.load()
        self.name = self._pipe.name

    def _submit(self, index: int, job: Job) -> Outcome:
        return _execute(self._pipe, index, job, record=False)

    def _wait(self, in_flight):
        return [handle for handle, _ in in_flight.values()]


def _mp_context() -> multiprocessing.context.BaseContext:
    """``forkserver`` (a clean single-threaded server that has imported torch and alignfuse once forks the
    workers: fast to start, and no fork of a driver whose threads may hold locks); ``spawn`` where missing."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["alignfuse.api", "alignfuse.batch"])
        return ctx
    return multiprocessing.get_context("spawn")


class _PoolRunner(Runner):
    """A local pool of ``workers`` processes (see :func:`_mp_context`)."""

    max_restarts = 3

    def _start(self) -> None:
        self.workers = int(self.parallel.workers or 1)
        self._restarts = 0
        self._pool = self._new_pool()
        self._greet(self._pool.submit(_worker_hello).result())

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(self.workers, mp_context=_mp_context(),
                                      initializer=_worker_setup, initargs=(self.spec, self.parallel.threads))

    def _stop(self, abort: bool) -> None:
        pool = getattr(self, "_pool", None)
        if pool is None:
            return
        if abort:  # Ctrl-C or an error in the driver: do not wait for the jobs in flight
            terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
            if terminate is not None:
                terminate()
            else:
                for process in list((getattr(pool, "_processes", None) or {}).values()):
                    process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
        else:
            pool.shutdown(wait=True)

    def _submit(self, index: int, job: Job) -> cf.Future:
        try:
            return self._pool.submit(_worker_run, index, job)
        except cf.process.BrokenProcessPool:
            self._restart()
            return self._pool.submit(_worker_run, index, job)

    def _restart(self) -> None:
        """A worker died (killed, out of memory, crashed in native code): replace the pool."""
        self._restarts += 1
        if self._restarts > self.max_restarts:
            raise RuntimeError(f"worker processes died {self._restarts} times; giving up")
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def _wait(self, in_flight):
        futures = {handle: index for index, (handle, _) in in_flight.items()}
        done, _ = cf.wait(futures, return_when=cf.FIRST_COMPLETED)
        outcomes = []
        for future in done:
            index = futures[future]
            try:
                outcomes.append(future.result())
            except cf.process.BrokenProcessPool as exc:
                name = in_flight[index][1]
                outcomes.append(Outcome(index, name, error=f"{name}: internal error (a worker process died while "
                                        f"this job was in flight: {exc})", internal=True))
            except Exception as exc:  # noqa: BLE001 - e.g. a job or value that cannot be pickled
                message, internal = failure_line(in_flight[index][1], exc)
                outcomes.append(Outcome(index, in_flight[index][1], error=message, internal=internal))
        return outcomes


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise MissingDependency("--ray needs Ray, which is not installed: pip install 'alignfuse[cluster]'") from exc
    return ray


class _RayRunner(Runner):
    """One Ray actor per worker (``num_cpus=threads``; ``num_gpus=1`` for a ``cuda`` device). Input and output
    files must be visible to every node (a shared filesystem) and alignfuse installed on each."""

    def _start(self) -> None:
        ray = self._ray = _import_ray()
        threads = self.parallel.threads or 1
        self._owns_ray = False
        if not ray.is_initialized():
            address = self.parallel.ray
            try:
                if address == "local":
                    cpus = (self.parallel.workers or os.cpu_count() or 1) * threads
                    # a private session folder, removed at shutdown (Ray's default, /tmp/ray, keeps every session)
                    self._ray_tmp = tempfile.mkdtemp(prefix="alignfuse-ray-")
                    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.ERROR,
                             _temp_dir=self._ray_tmp)
                else:
                    ray.init(address=address, logging_level=logging.ERROR)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                self._remove_ray_tmp()
                raise UserError(f"--ray {address}: cannot connect to a Ray cluster ({_one_line(exc)}); start one "
                                "with `ray start --head`, or use --ray local") from exc
            self._owns_ray = True
        cpus = int(ray.cluster_resources().get("CPU", 0))
        self.workers = int(self.parallel.workers or max(1, cpus // threads))
        if self.workers * threads > cpus:
            raise UserError(f"--ray: the cluster has {cpus} CPUs, {self.workers} workers x {threads} threads need "
                            f"{self.workers * threads}; lower --workers or --threads")
        gpus = 1 if str(self.spec.device or "").startswith("cuda") else 0
        self._actor_class = ray.remote(num_cpus=threads, num_gpus=gpus)(_RayWorker)
        self._actors = [self._new_actor() for _ in range(self.workers)]
        hellos = ray.get([a.hello.remote() for a in self._actors])
        self._greet(hellos[0])
        self._load = {id(a): 0 for a in self._actors}
        self._owner: dict[Any, Any] = {}  # object ref -> actor

    def _new_actor(self):
        return self._actor_class.remote(self.spec, self.parallel.threads)

    def _stop(self, abort: bool) -> None:
        ray = getattr(self, "_ray", None)
        if ray is None:
            return
        for actor in getattr(self, "_actors", []):
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self._owns_ray:
            ray.shutdown()
            self._remove_ray_tmp()

    def _remove_ray_tmp(self) -> None:
        folder = getattr(self, "_ray_tmp", None)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            self._ray_tmp = None

    def _submit(self, index: int, job: Job) -> Any:
        actor = min(self._actors, key=lambda a: self._load[id(a)])
        ref = actor.run.remote(index, job)
        self._load[id(actor)] += 1
        self._owner[ref] = actor
        return ref

    def _wait(self, in_flight):
        ray = self._ray
        refs = {handle: index for index, (handle, _) in in_flight.items()}
        done, _ = ray.wait(list(refs), num_returns=1)
        outcomes = []
        for ref in done:
            index, name = refs[ref], in_flight[refs[ref]][1]
            actor = self._owner.pop(ref)
            self._load[id(actor)] -= 1
            try:
                outcomes.append(ray.get(ref))
            except ray.exceptions.RayActorError as exc:
                outcomes.append(Outcome(index, name, error=f"{name}: internal error (a Ray worker died while this "
                                        f"job was in flight: {_one_line(exc)[:200]})", internal=True))
                if actor in self._actors:  # replace it (jobs still queued on it fail the same way)
                    self._actors[self._actors.index(actor)] = fresh = self._new_actor()
                    self._load[id(fresh)] = 0
            except Exception as exc:  # noqa: BLE001
                message, internal = failure_line(name, exc)
                outcomes.append(Outcome(index, name, error=message, internal=internal))
        return outcomes


def open_runner(spec: PipelineSpec, parallel: Parallel | None = None) -> Runner:
    """A runner for ``parallel`` (serial by default); use as ``with open_runner(spec, p) as runner:``.

    Entering it builds the pipeline(s): an unknown model or unreadable weights raise there, before any job."""
    parallel = parallel or Parallel()
    if parallel.workers is not None and parallel.workers < 1:
        raise UserError(f"--workers must be a positive integer, got {parallel.workers}")
    if parallel.ray is not None:
        _import_ray()
        return _RayRunner(spec, parallel)
    if parallel.serial:
        return _SerialRunner(spec, parallel)
    return _PoolRunner(spec, parallel)
