"""``alignfuse`` command line: fuse, register, synth, evaluate, report, metrics, models.

Every error a user can cause is one line on stderr naming the file and the problem, with exit
status 2; batch commands continue past a bad pair, list the failures at the end and exit 1. An
internal error (a bug) is one line too, exit status 1; ``--debug`` shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import UserError, suspect_detail
from .registry import DEFAULT_PIPELINE

# What the user can cause: UserError (options, images, fields, weights, data folders; io's and
# checkpoints' errors subclass it), files that cannot be read or written (OSError) and a missing
# optional dependency (ImportError, e.g. elastix: its message says what to install). Anything else,
# ValueError and KeyError included, is a bug: an internal error. --debug shows every traceback.
USER_ERRORS = (UserError, OSError)  # a missing optional extra is a MissingDependency (a UserError)


def _err(msg: str) -> None:
    print(f"alignfuse: error: {msg}", file=sys.stderr)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Library warnings (``warnings.warn``) as one line each, like the CLI's own notes and warnings."""
    print(f"alignfuse: warning: {message}", file=sys.stderr)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc)


def _json(obj, **kw) -> str:
    """``json.dumps`` that writes NaN/inf (a metric undefined on a flat image) as ``null``: strict JSON."""
    def clean(o):
        if isinstance(o, (float, np.floating)):
            return float(o) if np.isfinite(o) else None
        if isinstance(o, np.ndarray):
            return clean(o.tolist())
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(obj), allow_nan=False, **kw)


def _optional_path(value: str | None, option: str) -> Path | None:
    """An optional output option as a path; an empty value (``--field ""``, an unset shell variable) is an error,
    not a silent "no output"."""
    if value is None:
        return None
    if not value.strip():
        raise UserError(f"{option}: empty path")
    return Path(value)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _set_threads(args: argparse.Namespace) -> None:
    """``--threads N``: torch's CPU threads in this process (commands without workers)."""
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _warn_no_registration(pipe, name: str) -> None:
    """A pipeline that aligns inside its fuser (RFVIF) has no registration to write: say so instead of writing the
    input IR (and a zero field) as if it had been aligned (``identity+*`` pipelines say it in their name)."""
    from .stages import IdentityRegistrar

    as_delivered = "the aligned IR is the IR as delivered (resampled onto the visible grid) and the field is zero"
    if pipe.aligns_in_fuser:
        print(f"alignfuse: warning: {name}: {pipe.name} aligns inside its fuser and does not register; {as_delivered}",
              file=sys.stderr)
    elif isinstance(pipe.registrar, IdentityRegistrar) and not pipe.name.startswith("identity"):
        print(f"alignfuse: warning: {name}: {pipe.name} does not register (an ablation without registration); "
              f"{as_delivered}", file=sys.stderr)


def _ir_norm(args: argparse.Namespace) -> str:
    return getattr(args, "ir_norm", "percentile")


def _print_notes(pair: io.Pair) -> None:
    for note in pair.notes:  # each note names its file
        print(f"alignfuse: note: {note}", file=sys.stderr)


def _warn_diagnostics(name: str, diagnostics: dict) -> None:
    if diagnostics.get("suspect"):
        print(f"alignfuse: warning: {name}: suspect registration ({suspect_detail(diagnostics)})", file=sys.stderr)


def _pipeline_options(args: argparse.Namespace) -> dict:
    """Pipeline keyword options from the command line (only those given, so every pipeline takes the defaults)."""
    options: dict = {}
    if getattr(args, "rig", None):
        options["rig"] = _read_rig(args.rig)
    if getattr(args, "no_local", False):
        options["local"] = False
    if getattr(args, "ir_field", None):
        options["ir_field"] = args.ir_field
    return options


def _read_rig(path: str):
    from .registration.rig import RigModel

    with warnings.catch_warnings():  # a weak rig warns once, where the pipeline is built
        warnings.simplefilter("ignore")
        return RigModel.load(path).require_usable()  # a failed one stops here, before any worker starts


def _pipeline_spec(args: argparse.Namespace):
    """The one place that turns options into the pipeline to build (a picklable ``batch.PipelineSpec``; batch
    workers build theirs from it); extra factory keyword arguments go in its ``options``."""
    from .batch import PipelineSpec

    return PipelineSpec(args.model, device=args.device, weights_dir=args.weights_dir, options=_pipeline_options(args))


def _load_pipeline(args: argparse.Namespace):
    return _pipeline_spec(args).load()


def _parallel(args: argparse.Namespace, jobs: int | None = None):
    """--workers / --ray / --threads -> ``batch.Parallel`` (no more workers than ``jobs``, when known)."""
    from .batch import Parallel

    workers = min(args.workers, jobs) if args.workers and jobs else args.workers
    return Parallel(workers=workers, ray=args.ray, threads=args.threads)


def _print_report(report, what: str, name: str, dest: object, unpaired: Sequence[str] = (), extra: str = "") -> int:
    """The end of a batch command: done/total, suspects, failures (and unpaired files); -> exit status."""
    print(f"fused {report.done}/{report.total} {what} with {name} -> {dest}{extra}")
    if report.suspects:
        print(f"alignfuse: warning: {len(report.suspects)} suspect registrations: {', '.join(report.suspects)}",
              file=sys.stderr)
    if report.failures or unpaired:
        print(f"alignfuse: {len(report.failures)} failed" + (f", {len(unpaired)} unpaired:" if what == "pairs" else ":"),
              file=sys.stderr)
        for line in list(report.failures) + list(unpaired):
            print(f"  {line}", file=sys.stderr)
    return 1 if report.failures or unpaired else 0


# ---------------------------------------------------------------------------------------------- fuse
def _pair_job(args: argparse.Namespace, name: str, ir_path: Path, vis_path: Path, out: Path,
              aligned_out: Path | None, field_out: Path | None, show_notes: bool):
    from .batch import PairJob

    return PairJob(name, ir_path, vis_path, out, aligned_out, field_out, ir_norm=_ir_norm(args),
                   bit_depth=args.bit_depth, strict=args.strict, resize_ir=args.resize_ir, show_notes=show_notes)


def cmd_fuse(args: argparse.Namespace) -> int:
    from . import io
    folder_mode = args.ir_dir is not None or args.vis_dir is not None
    video_mode = args.ir_video is not None or args.vis_video is not None
    if video_mode:
        if folder_mode or args.ir is not None or args.vis is not None:
            raise UserError("give either IR VIS files, --ir-dir/--vis-dir or --ir-video/--vis-video, not several")
        if args.ir_video is None or args.vis_video is None:
            raise UserError("video mode needs both --ir-video and --vis-video")
        return _fuse_video(args)
    if args.save_frames:
        raise UserError("--save-frames applies to video mode (--ir-video/--vis-video)")
    if folder_mode:
        if args.ir is not None or args.vis is not None:
            raise UserError("give either IR VIS files or --ir-dir/--vis-dir, not both")
        if args.ir_dir is None or args.vis_dir is None:
            raise UserError("folder mode needs both --ir-dir and --vis-dir")
        return _fuse_folder(args)
    if args.ir is None or args.vis is None:
        raise UserError("give IR and VIS image paths (or --ir-dir and --vis-dir, or --ir-video and --vis-video)")
    if (args.workers or 1) > 1 or args.ray is not None or args.limit is not None:
        raise UserError("--workers, --ray and --limit apply to folder mode (--ir-dir/--vis-dir) and video mode "
                        "(--ir-video/--vis-video)")
    folder_only = _folder_only_options(args)
    if folder_only:
        raise UserError(f"{', '.join(folder_only)}: folder mode options (--ir-dir/--vis-dir); for one pair use "
                        "--aligned-ir PATH / --field PATH and give the output's extension in -o")
    aligned_out = _optional_path(args.aligned_ir, "--aligned-ir")
    field_out = _optional_path(args.field, "--field")
    io.check_outputs([Path(args.ir), Path(args.vis)], [(Path(args.output), "fused image"),
                   (aligned_out, "aligned IR"), (field_out, "field")], args.bit_depth)
    job = _pair_job(args, Path(args.vis).stem, Path(args.ir), Path(args.vis), Path(args.output), aligned_out,
                    field_out, show_notes=True)
    pair = job.load()  # before the networks load: a bad input is reported at once
    _set_threads(args)
    pipe = _load_pipeline(args)
    if aligned_out is not None or field_out is not None:
        _warn_no_registration(pipe, args.ir)
    t0 = time.perf_counter()
    diag = job.run(pipe, pair)
    _warn_diagnostics(args.ir, diag)
    extras = "".join(f", {what} -> {path}" for what, path in (("aligned IR", aligned_out),
                                                                 ("field", field_out and io.field_path(field_out)))
                     if path is not None)
    print(f"fused {args.ir} + {args.vis} with {pipe.name} in {time.perf_counter() - t0:.2f} s -> {args.output}"
          + extras)
    return 0


def _folder_only_options(args: argparse.Namespace) -> list[str]:
    """The folder-mode options given outside folder mode (they would be ignored silently)."""
    given = [("--save-aligned", args.save_aligned), ("--save-field", args.save_field),
             ("--split", args.split is not None), ("--ext", args.ext != "png")]
    return [name for name, on in given if on]


def _fuse_folder(args: argparse.Namespace) -> int:
    from . import io
    from tqdm import tqdm

    from .batch import Report, grouped_notes, open_runner, stale_files, stale_warning

    if args.aligned_ir is not None or args.field is not None:
        raise UserError("in folder mode use --save-aligned / --save-field (written under OUT/aligned_ir, OUT/field)")
    if io.resolved_path(Path(args.ir_dir)) == io.resolved_path(Path(args.vis_dir)):
        raise UserError(f"--ir-dir and --vis-dir are the same folder ({args.ir_dir}): every image would be paired "
                        "with itself")
    names = io.read_split(Path(args.split)) if args.split else None
    pairs, unpaired = io.pair_folders(Path(args.ir_dir), Path(args.vis_dir), names=names)
    if not pairs:
        raise UserError(f"no pairs with matching names in {args.ir_dir} and {args.vis_dir}"
                        + (f" ({len(unpaired)} problems, e.g. {unpaired[0]})" if unpaired else ""))
    pairs = pairs[: args.limit] if args.limit else pairs
    out_dir = Path(args.output)
    args.ext = args.ext.lstrip(".")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder (folder mode writes one file per pair into -o)")
    # --ext / --bit-depth / -o: fail before any work
    io.check_output_path(out_dir / f"x.{args.ext}", args.bit_depth, label=f"--ext {args.ext}", probe=True)
    inputs = (io.resolved_path(Path(args.ir_dir)), io.resolved_path(Path(args.vis_dir)))
    for d in [out_dir] + [out_dir / sub for sub, on in (("aligned_ir", args.save_aligned), ("field", args.save_field)) if on]:
        if io.resolved_path(d) in inputs:
            raise UserError(f"{d}: is an input folder; outputs would overwrite or mix with the inputs")
    jobs = [_pair_job(args, stem, ir_path, vis_path, out_dir / f"{stem}.{args.ext}",
                      out_dir / "aligned_ir" / f"{stem}.{args.ext}" if args.save_aligned else None,
                      out_dir / "field" / f"{stem}.npy" if args.save_field else None, show_notes=False)
            for stem, ir_path, vis_path in pairs]
    report, notes, done = Report(), [], []
    with open_runner(_pipeline_spec(args), _parallel(args, len(jobs))) as runner:
        for outcome in tqdm(runner.map(jobs), total=len(jobs), desc=f"fuse ({runner.name})", unit="pair",
                            disable=args.quiet):
            report.add(outcome, suspect=bool(outcome.ok and outcome.value.get("suspect")))
            if outcome.ok:
                notes.extend(outcome.value.get("input_notes", ()))
                done.append(jobs[outcome.index])
    for note in grouped_notes(notes):  # after the progress bar, each naming its file(s)
        print(f"alignfuse: note: {note}", file=sys.stderr)
    # outputs this run did not write (a pair since removed, a failed pair) would pass for this run's
    # (any image format: an earlier run may have used another --ext; the subfolders even when not written this time)
    images = [f"*{ext}" for ext in io.OUTPUT_EXTENSIONS]
    outputs = [(out_dir, images, "output"), (out_dir / "aligned_ir", images, "aligned_output"),
               (out_dir / "field", ["*.npy"], "field_output")]
    for folder, patterns, attr in outputs:
        stale = stale_files(folder, patterns, [getattr(job, attr) for job in done if getattr(job, attr) is not None])
        if stale:
            print(f"alignfuse: warning: {stale_warning(folder, stale)}", file=sys.stderr)
    return _print_report(report, "pairs", runner.name, out_dir, unpaired)


def _fuse_video(args: argparse.Namespace) -> int:
    from . import io
    from . import video
    from .batch import open_runner

    if args.aligned_ir or args.field or args.save_aligned or args.save_field:
        raise UserError("video mode writes the fused video (and --save-frames PNGs) only")
    folder_only = _folder_only_options(args)
    if folder_only:
        raise UserError(f"{', '.join(folder_only)}: folder mode options (--ir-dir/--vis-dir), not video mode ones")
    if args.save_frames:
        frames = Path(args.save_frames)
        if frames.exists() and not frames.is_dir():
            raise UserError(f"--save-frames {frames}: exists and is not a folder")
        io.check_writable(frames / "frame_000000.png", probe=True)
    ir_path, vis_path, out = Path(args.ir_video), Path(args.vis_video), Path(args.output)
    video.check_output(out, [ir_path, vis_path])
    with video.open_video(ir_path) as ir, video.open_video(vis_path) as vis, \
            open_runner(_pipeline_spec(args), _parallel(args)) as runner:
        notes, warns = video.pairing_notes(ir, vis, args.limit)
        for line in notes:
            print(f"alignfuse: note: {line}", file=sys.stderr)
        for line in warns:
            print(f"alignfuse: warning: {line}", file=sys.stderr)
        report = video.fuse_video(ir, vis, runner, out, save_frames=args.save_frames, limit=args.limit,
                                  progress=not args.quiet,
                                  ir_norm=_ir_norm(args), bit_depth=args.bit_depth, strict=args.strict)
    if report.total == 0 and not report.failures:
        raise UserError(f"{ir_path}, {vis_path}: no frame pairs to fuse")
    extra = f" ({report.written} frames, {report.codec}, {float(report.rate):.6g} fps)"
    if args.save_frames:
        extra += f", frames -> {args.save_frames}"
    return _print_report(report, "frames", runner.name, out, extra=extra)


# ------------------------------------------------------------------------------------------ register
def cmd_register(args: argparse.Namespace) -> int:
    from . import io

    field_out = _optional_path(args.field, "--field")
    io.check_outputs([Path(args.ir), Path(args.vis)], [(Path(args.output), "aligned IR"), (field_out, "field")],
                   args.bit_depth)
    # the pair is read before the networks load: a bad input is reported at once
    pair = io.load_pair(Path(args.ir), Path(args.vis), resize_ir=args.resize_ir, ir_norm=_ir_norm(args))
    _print_notes(pair)
    from .api import register_arrays

    _set_threads(args)
    pipe = _load_pipeline(args)
    _warn_no_registration(pipe, args.ir)
    result = register_arrays(pair.ir, pair.vis, pipe, ir_size=pair.ir_size if pair.ir_resized else None,
                             warn=False)
    if args.strict and result.diagnostics.get("suspect"):
        raise UserError(f"{args.ir}: registration is suspect and --strict was given "
                        f"({suspect_detail(result.diagnostics)})")
    io.write_image(Path(args.output), result.aligned_ir, bit_depth=args.bit_depth)
    field_path = io.write_field(field_out, result.field) if field_out is not None else None
    _warn_diagnostics(args.ir, result.diagnostics)
    mag = np.sqrt((result.field.astype(np.float64) ** 2).sum(0))
    # with -v, stdout carries only the JSON (scripts parse it); the summary goes to stderr
    print(f"registered {args.ir} onto {args.vis} with {pipe.name}: mean |field| {mag.mean():.2f} px, "
          f"max {mag.max():.2f} px -> {args.output}" + (f", field -> {field_path}" if field_path else ""),
          file=sys.stderr if args.verbose else sys.stdout)
    if args.verbose:
        print(_json(result.diagnostics, default=str))
    return 0


# ------------------------------------------------------------------------------------------ calibrate
def _calibration_pairs(args: argparse.Namespace, failures: list[str]) -> list:
    from . import io
    names = io.read_split(Path(args.split)) if args.split else None
    pairs, unpaired = io.pair_folders(Path(args.ir_dir), Path(args.vis_dir), names=names)
    if not pairs:
        raise UserError(f"{args.ir_dir}: no frame has a visible frame of the same name in {args.vis_dir}"
                        + (f" ({len(unpaired)} unpaired, e.g. {unpaired[0]})" if unpaired else ""))
    failures.extend(unpaired)
    if args.limit:
        pairs = pairs[:: max(1, len(pairs) // args.limit)][: args.limit]  # spread over the sequence
    return pairs


def _calibration_frames_from_folders(args: argparse.Namespace, pairs: list, failures: list[str]):
    from . import io
    for stem, ir_path, vis_path in pairs:
        try:
            pair = io.load_pair(ir_path, vis_path, ir_norm=_ir_norm(args))
        except USER_ERRORS as exc:
            failures.append(f"{stem}: {_message(exc)}")
            continue
        yield stem, pair.ir, pair.vis_y, pair.ir_size


def _calibration_frames_from_videos(args: argparse.Namespace, ir, vis):
    """Frames of two open ``video.VideoInput`` streams, paired by index (``--limit``: spread over the videos)."""
    from . import io
    from . import video

    with ir, vis:
        known = min(ir.frames, vis.frames) if ir.frames and vis.frames else 0
        step = max(1, known // args.limit) if args.limit and known else 1
        ir_frames, vis_frames = ir.frames_as_arrays("ir", _ir_norm(args)), vis.frames_as_arrays("vis")
        used = 0
        for index, (a, b) in enumerate(zip(ir_frames, vis_frames)):
            if args.limit and used >= args.limit:
                break
            if index % step:
                continue
            used += 1
            vis_y = io.rgb_to_ycbcr(b)[0] if b.ndim == 3 else b
            ir_size = (a.shape[1], a.shape[0])
            resampled = a if a.shape == vis_y.shape else io.resample_to(a, (vis_y.shape[1], vis_y.shape[0]))
            yield video.frame_name(index), resampled, vis_y, ir_size


def cmd_calibrate(args: argparse.Namespace) -> int:
    from . import io
    from tqdm import tqdm

    from .registration.rig import estimate_rig

    folders, videos = (args.ir_dir, args.vis_dir), (args.ir_video, args.vis_video)
    if any(videos) == any(folders) or not (all(folders) or all(videos)):
        raise UserError("calibrate needs --ir-dir and --vis-dir (frames paired by file name) or --ir-video and "
                        "--vis-video (frames paired by index)")
    out = Path(args.output)
    if out.is_dir():
        raise UserError(f"{out}: is a folder; give the rig file's path (e.g. rig.json)")
    if out.suffix.lower() != ".json":
        raise UserError(f"{out}: a rig file is JSON; give a path ending in .json (e.g. rig.json)")
    io.check_writable(out, probe=True)  # (a .json path is never one of the frames or videos read)
    _set_threads(args)
    out.parent.mkdir(parents=True, exist_ok=True)  # fail before the work, not after it
    failures: list[str] = []
    if all(videos):  # opened (and checked) before the progress bar starts
        from . import video

        ir = video.open_video(args.ir_video)
        try:
            vis = video.open_video(args.vis_video)
        except BaseException:
            ir.close()
            raise
        source, total = _calibration_frames_from_videos(args, ir, vis), args.limit
    else:  # the folders are checked before the progress bar starts
        pairs = _calibration_pairs(args, failures)
        source, total = _calibration_frames_from_folders(args, pairs, failures), len(pairs)
    from .registration import GlobalSearchRegistrar

    rig, _ = estimate_rig(tqdm(source, desc="calibrate", unit="frame", total=total, disable=args.quiet),
                          GlobalSearchRegistrar(ir_field=args.ir_field))
    if rig.verdict == "failed" and out.exists():  # never replace a rig file with a failed calibration
        out = out.with_name(out.stem + ".failed.json")
    rig.save(out)
    spread = rig.spread_px
    print(f"rig: {rig.model}, {rig.frames.get('agreed', 0)}/{rig.frames.get('frames', 0)} frames agree"
          + (f", corner spread RMS {spread['corner_rms']:.2f} px (max {spread['corner_max']:.2f})" if spread else "")
          + f"; verdict {rig.verdict}: {rig.reason} -> {out}")
    for line in failures:
        print(f"alignfuse: warning: skipped {line}", file=sys.stderr)
    return 0 if rig.verdict != "failed" else 1


# --------------------------------------------------------------------------------------------- synth
def cmd_synth(args: argparse.Namespace) -> int:
    from . import io
    from tqdm import tqdm

    from . import synth

    spec = synth.parse_preset(args.preset)
    _set_threads(args)
    data = Path(args.data)
    names = io.read_split(Path(args.split)) if args.split else None
    pairs, unpaired = io.pair_folders(data / "ir", data / "vi", names=names)
    if not pairs:
        raise UserError(f"{data}: no ir/vi pairs found (expected subfolders ir/ and vi/)")
    pairs = pairs[: args.limit] if args.limit else pairs
    out = Path(args.output)
    io.check_output_folder(out, [data], "-o")
    entries, failures = [], []
    for stem, ir_path, vis_path in tqdm(pairs, desc=f"synth {spec.name}", unit="pair", disable=args.quiet):
        try:
            pair = io.load_pair(ir_path, vis_path)
            s = synth.synthesise_pair(pair.ir, pair.vis, spec, synth.pair_rng(args.seed, stem))
            entries.append(synth.write_pair(out, stem, s))
        except USER_ERRORS as exc:
            failures.append(f"{stem}: {_message(exc)}")
    if not entries:
        raise UserError(f"no pair could be synthesised: {failures[0] if failures else 'nothing to do'}")
    synth.write_manifest(out / "manifest.json", spec, args.seed, entries)
    mean = np.mean([e["mean_px"] for e in entries])
    print(f"wrote {len(entries)} misaligned pairs ({spec.name}, seed {args.seed}, mean |field| {mean:.2f} px) -> {out}")
    if failures or unpaired:
        print(f"alignfuse: {len(failures)} failed, {len(unpaired)} unpaired:", file=sys.stderr)
        for line in failures + unpaired:
            print(f"  {line}", file=sys.stderr)
    return 1 if failures else 0


# ------------------------------------------------------------------------------------------ evaluate
def _fusion_metric_names(spec: str | None) -> tuple[str, ...]:
    """``--metrics``: default (the papers' set), vifb (VIFB's 13), all, or comma-separated names."""
    from .evaluation import DEFAULT_FUSION_METRICS
    from .metrics.fusion import FUSION_METRIC_NAMES, VIFB_METRIC_NAMES

    named = {"default": DEFAULT_FUSION_METRICS, "vifb": VIFB_METRIC_NAMES, "all": FUSION_METRIC_NAMES}
    if spec is None or spec in named:
        return tuple(named[spec or "default"])
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in FUSION_METRIC_NAMES]
    if unknown or not names:
        listed = ", ".join(unknown) if unknown else repr(spec)
        raise UserError(f"--metrics: unknown metric(s) {listed}; use default, vifb, all or "
                        f"names from: {', '.join(FUSION_METRIC_NAMES)}")
    return names


def _check_not_dataset_file(path: Path, data: Path, split: Path | None) -> None:
    """``UserError`` when writing ``path`` would overwrite a file the dataset is read from: the split file, anything
    in its image / field folders (a stored test set's too), or any existing file of the ``data`` folder that is not
    an earlier ``evaluate --json`` result (a stored test set's ``manifest.json`` is JSON too)."""
    from . import io

    target, root = io.resolved_path(path), io.resolved_path(data)
    if split is not None and target == io.resolved_path(split):
        raise UserError(f"--json {path}: is the --split file; choose another path for the results")
    if any(root / sub in target.parents for sub in io.DATASET_FOLDERS):
        raise UserError(f"--json {path}: is inside an image folder of the input dataset {data}; choose another path")
    if path.is_file() and root in target.parents and not _is_evaluate_result(path):
        raise UserError(f"--json {path}: would overwrite a file of the input dataset {data}; choose another path")


def _is_evaluate_result(path: Path) -> bool:
    """True for a JSON file written by ``evaluate --json`` (its own keys), which a new run may replace."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(content, dict) and {"summary", "pairs", "preset"} <= set(content)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import io
    from .api import load_pipeline
    from .evaluation import REGISTRATION_METRICS, evaluate, format_table, iter_samples, summarise

    if args.json:  # before any work: the per-pair results of a long run must not be lost at the end
        json_path = io.check_writable(Path(args.json), probe=True)
        if json_path.exists() and not json_path.is_file():
            raise UserError(f"--json {json_path}: exists and is not a file")
        _check_not_dataset_file(json_path, Path(args.data), Path(args.split) if args.split else None)
    _set_threads(args)
    models = [m for spec in args.model for m in spec.split(",") if m]
    results: dict[str, dict] = {}
    per_pair: dict[str, list] = {}
    failed: dict[str, list] = {}
    pipes = {model: load_pipeline(model, device=args.device, weights_dir=args.weights_dir) for model in models}
    source = iter_samples(Path(args.data), args.preset, args.seed, Path(args.split) if args.split else None,
                          args.limit)
    # read and misalign each pair once; every model sees the same samples
    samples = list(source.samples) if len(models) > 1 else None
    fusion_metrics = _fusion_metric_names(args.metrics)
    for model, pipe in pipes.items():
        rows, failures = evaluate(pipe, iter(samples) if samples is not None else source.samples,
                                  total=source.count, fusion_metrics=fusion_metrics, progress=not args.quiet)
        if not rows:  # a bug that fails every pair stays an internal error
            message = f"{model}: no pair could be evaluated ({failures[0].name}: {failures[0].message})"
            raise RuntimeError(message) if failures[0].internal else UserError(message)
        results[model], per_pair[model] = summarise(rows), rows
        failed[model] = [f"{f.name}: {f.message}" for f in failures]
    first = next(iter(results.values()))
    reg = [m for m in REGISTRATION_METRICS if m in first]
    fus = [m for m in first if m not in reg and m not in ("seconds", "suspect")]
    n = len(next(iter(per_pair.values())))
    kind = "stored test set" if source.stored else "synthesised on the fly"
    print(f"\n{Path(args.data).name} | preset {source.preset} | seed {source.seed} | {n} pairs ({kind})")
    print("\nRegistration (registered IR vs ground-truth IR inside the valid region; MI in nats; EPE in px; "
          "suspect = fraction of pairs flagged):\n")
    print(format_table(results, reg + ["seconds", "suspect"]))
    print("\nFusion (8-bit; VIS luminance, ground-truth IR, fused luminance; VIFB conventions):\n")
    print(format_table(results, fus))
    for line in source.unpaired:
        print(f"alignfuse: warning: {line}", file=sys.stderr)
    for model, lines in failed.items():
        for line in lines:
            print(f"alignfuse: {model}: failed {line}", file=sys.stderr)
    if args.json:
        payload = {"data": str(args.data), "split": args.split, "preset": source.preset, "seed": source.seed,
                   "summary": results, "pairs": per_pair, "failures": failed}
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(_json(payload, indent=1))
        tmp.replace(path)
        print(f"\nper-pair results -> {path}")
    return 1 if any(failed.values()) else 0


# -------------------------------------------------------------------------------------------- report
class _SourceAction(argparse.Action):
    """``--data DIR`` / ``--raw DIR`` append a source; ``--split FILE`` sets the names of the one before it."""

    def __call__(self, parser, namespace, value, option_string=None):
        from .report import Source

        sources = getattr(namespace, "sources", None) or []
        if self.dest == "split":
            if not sources or sources[-1][1].split is not None:
                parser.error("--split must follow the --data or --raw folder it applies to (one each)")
            sources[-1][1].split = Path(value)
        else:
            sources.append((self.dest, Source(Path(value))))
        namespace.sources = sources


def cmd_report(args: argparse.Namespace) -> int:
    from . import io
    from .report import make_plan, run_report

    _set_threads(args)
    sources = getattr(args, "sources", None) or []

    def names(text: str | None) -> list[str] | None:
        return None if text is None else [n.strip() for n in text.split(",") if n.strip()]

    io.check_output_folder(Path(args.output), [s.path for _, s in sources], "-o")
    plan = make_plan([s for kind, s in sources if kind == "data"], Path(args.output),
                     raw=[s for kind, s in sources if kind == "raw"], pipelines=names(args.pipelines),
                     grid=names(args.grid), quick=args.quick, limit=args.limit, seed=args.seed,
                     examples=args.examples, device=args.device, cache=Path(args.cache) if args.cache else None)
    index = run_report(plan, progress=not args.quiet)
    print(f"report -> {index} (report.md, results.csv, plots; a rerun reuses {plan.cache or plan.out / 'cache'})")
    return 0


# ------------------------------------------------------------------------------------------- metrics
def cmd_metrics(args: argparse.Namespace) -> int:
    from . import io
    from .metrics import compute_fusion_metrics

    def load_255(path: str, kind: str) -> np.ndarray:
        # metrics use 0..255 values as in VIFB: 8-bit images exactly, 16-bit ones scaled (not rounded)
        img = io.read_image(Path(path), kind=kind, norm=args.ir_norm if kind == "ir" else "fixed")
        scaled = img.data.astype(np.float64) * 255
        return np.floor(scaled + 0.5) if img.bit_depth == 8 else scaled

    vis, ir, fused = load_255(args.vis, "vis"), load_255(args.ir, "ir"), load_255(args.fused, "vis")
    h, w = vis.shape[:2]
    for path, a, what in ((args.ir, ir, "infrared"), (args.fused, fused, "fused")):
        if a.shape[:2] != (h, w):
            raise UserError(f"{path}: {what} image is {a.shape[1]}x{a.shape[0]} but the visible image {args.vis} is "
                            f"{w}x{h}; metrics compare images of one size")
    if fused.ndim == 2 and vis.ndim == 3:  # VIFB scores a colour fusion per channel; grey vs colour is undefined
        raise UserError(f"{args.fused}: greyscale fused image but the visible image {args.vis} is colour; give the "
                        "colour fused image (as `fuse` writes it) or a greyscale visible image")
    names = [n.strip() for n in args.names.split(",") if n.strip()] if args.names is not None else None
    if names == []:
        raise UserError("--names: no metric name given")
    values = compute_fusion_metrics(vis, ir, fused, names=names)
    if args.json:
        print(_json(values))
    else:
        width = max(map(len, values))
        for k, v in values.items():
            print(f"{k:<{width}}  {v:.6g}")
    return 0


# --------------------------------------------------------------------------------------------- train
def _parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise UserError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def cmd_train(args: argparse.Namespace) -> int:
    from . import io
    from .training.recipes import TrainArgs, run_recipe

    _set_threads(args)
    overrides = dict(_parse_override(s) for s in args.set)
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.seed is not None:
        overrides["seed"] = args.seed
    io.check_output_folder(Path(args.out), [Path(args.data)], "--out")
    targs = TrainArgs(model=args.stage, data=Path(args.data), split=Path(args.split) if args.split else None,
                      config=args.config, out=Path(args.out), resume=args.resume, device=args.device,
                      overrides=overrides, progress=not args.quiet)
    last = run_recipe(targs)
    print(f"trained {args.stage} ({args.config}) -> {args.out}: {json.dumps(last)}")
    return 0


# -------------------------------------------------------------------------------------------- models
def cmd_models(args: argparse.Namespace) -> int:
    from .registry import list_pipelines

    for name, desc in list_pipelines(classical=not args.no_classical).items():
        marker = " (default)" if name == DEFAULT_PIPELINE else ""
        print(f"{name:<24} {desc}{marker}")
    return 0


# ---------------------------------------------------------------------------------------------- main
IR_FIELD_HELP = ("what the IR camera sees relative to the visible one: wider (default; the IR sees as much or more, "
                 "down to ~60 %% of the visible width; an IR of another size for which nothing is found, or a solution "
                 "at the top of the wide scale range, is then searched as narrower too) or narrower (a narrow thermal lens beside a wide visible camera: "
                 "38-110 %% of the visible width; searched alone); sets the scales the global search tries (pipelines "
                 "default, default+gff, default+pwf, and calibrate)")


def _common(p: argparse.ArgumentParser, pipeline: bool = True) -> None:
    if pipeline:
        p.add_argument("--model", default=DEFAULT_PIPELINE, help=f"pipeline name (default {DEFAULT_PIPELINE}; "
                       "see `alignfuse models`)")
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
        p.add_argument("--weights-dir", help="folder of NAME.safetensors + NAME.json to use instead of the shipped weights")
        p.add_argument("--rig", help="rig file from `alignfuse calibrate`: its IR->visible model replaces the per-frame "
                       "global search (pipelines default, default+gff)")
        p.add_argument("--no-local", action="store_true", help="skip the local (MRRN) stage of the default registration")
        p.add_argument("--ir-field", choices=["wider", "narrower"], help=IR_FIELD_HELP)
    p.add_argument("--resize-ir", action="store_true", help="accepted for compatibility: an IR of another size is "
                   "always resampled onto the VIS grid (fields refer to the resampled IR; see README, Conventions)")
    p.add_argument("--ir-norm", default="percentile", choices=["percentile", "minmax", "fixed"],
                   help="16-bit IR normalisation: 0.5/99.5 percentiles (default), min-max, or /65535")
    p.add_argument("--bit-depth", type=int, default=8, choices=[8, 16], help="bit depth of written images")
    p.add_argument("--strict", action="store_true", help="treat a suspect registration as an error")


FUSE_EPILOG = """\
video mode (pip install 'alignfuse[video]'):
  alignfuse fuse --ir-video IR.mp4 --vis-video VIS.mp4 -o fused.mp4 [--save-frames DIR] [--limit N] [--workers N]
  Frames are paired by index (not time stamp) and the run stops at the shorter stream; a warning says so once
  when the frame counts or frame rates differ. The output runs at the visible stream's frame rate, on the
  visible grid (H.264 / libx264 at constant quantiser 18 if available, else MPEG-4; yuv420p, an odd size padded by
  one pixel).
  A frame that fails is skipped and listed at the end (exit 1); the frames fused so far are always kept.

parallel runs (folder and video mode): --workers N starts N local processes, --ray auto|ADDRESS|local runs
  them on Ray (pip install 'alignfuse[cluster]'); each worker loads the pipeline once and runs 1 torch thread
  (--threads); outputs, order and summary are those of a serial run.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignfuse", description="Fuse misaligned infrared and visible images.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"alignfuse {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for internal errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add = sub.add_parser

    def add_parser(name: str, **kw):  # every subcommand also accepts --debug
        p = _add(name, **kw)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks for internal errors")
        return p

    sub.add_parser = add_parser  # type: ignore[method-assign]

    p = sub.add_parser("fuse", help="register and fuse one pair, two folders or two videos",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=FUSE_EPILOG)
    p.add_argument("ir", nargs="?", help="infrared image (moving)")
    p.add_argument("vis", nargs="?", help="visible image (reference grid)")
    p.add_argument("-o", "--output", required=True, help="fused image path (folder in folder mode)")
    p.add_argument("--aligned-ir", help="also write the registered IR here")
    p.add_argument("--field", help="also write the (2,H,W) float32 (dx,dy) field here (.npy)")
    p.add_argument("--ir-dir", help="folder mode: infrared folder")
    p.add_argument("--vis-dir", help="folder mode: visible folder (paired by file name)")
    p.add_argument("--split", help="folder mode: only the names listed in this file")
    p.add_argument("--save-aligned", action="store_true", help="folder mode: write OUT/aligned_ir/")
    p.add_argument("--save-field", action="store_true", help="folder mode: write OUT/field/*.npy")
    p.add_argument("--ext", default="png", help="folder mode: output extension (default png)")
    p.add_argument("--ir-video", help="video mode: infrared video (frames paired with --vis-video by index)")
    p.add_argument("--vis-video", help="video mode: visible video; -o is the fused video (.mp4, .mkv, .mov, .avi)")
    p.add_argument("--save-frames", metavar="DIR", help="video mode: also write DIR/frame_000000.png ...")
    p.add_argument("--limit", type=_positive_int, help="folder / video mode: first N pairs / frames only")
    p.add_argument("--workers", type=_positive_int, help="folder / video mode: N local worker processes, each "
                   "loading the pipeline once (default 1: serial; with --ray: the cluster's CPUs / --threads)")
    p.add_argument("--ray", metavar="auto|ADDRESS|local", help="folder / video mode: run the workers as actors on a "
                   "Ray cluster (auto: the running one, ADDRESS: ray://host:10001 or host:6379, local: start one "
                   "here); needs `pip install 'alignfuse[cluster]'`; files must be visible to every node")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads per worker (default 1 with --workers / "
                   "--ray, torch's default otherwise); outputs are byte-identical at equal thread counts")
    p.add_argument("-q", "--quiet", action="store_true", help="folder / video mode: no progress bar")
    _common(p)
    p.set_defaults(func=cmd_fuse)

    p = sub.add_parser("register", help="register IR onto VIS, write the aligned IR (and the field)")
    p.add_argument("ir")
    p.add_argument("vis")
    p.add_argument("-o", "--output", required=True, help="aligned IR image path")
    p.add_argument("--field", help="write the float32 (2,H,W) field: aligned[y,x] = ir[y+dy, x+dx]")
    p.add_argument("-v", "--verbose", action="store_true", help="print the registration diagnostics as JSON on "
                   "stdout (the summary line then goes to stderr)")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's)")
    _common(p)
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("calibrate", help="estimate one IR->visible model of a fixed rig from many frames (rig.json)")
    p.add_argument("--ir-dir", help="infrared frames")
    p.add_argument("--vis-dir", help="visible frames (paired by file name)")
    p.add_argument("--ir-video", help="infrared video (frames paired by index with --vis-video)")
    p.add_argument("--vis-video", help="visible video")
    p.add_argument("--split", help="only the names listed in this file")
    p.add_argument("--limit", type=_positive_int, help="use at most N frames, spread over the sequence")
    p.add_argument("-o", "--output", required=True, help="rig file to write (.json; a failed calibration never "
                   "replaces an existing file: it goes to NAME.failed.json)")
    p.add_argument("--ir-norm", default="percentile", choices=["percentile", "minmax", "fixed"],
                   help="16-bit IR normalisation, as in `fuse`")
    p.add_argument("--ir-field", default="wider", choices=["wider", "narrower"], help=IR_FIELD_HELP)
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("synth", help="write a misaligned test set with ground-truth fields")
    p.add_argument("--data", required=True, help="folder with ir/ and vi/")
    p.add_argument("--split", help="file of names to use")
    p.add_argument("--preset", default="umf", help="umf, large, shift:N, none or custom:rot=..,tx=..")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=_positive_int, help="first N pairs only")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("evaluate", help="misalign, run pipelines, print registration and fusion tables")
    p.add_argument("--data", required=True, help="folder with ir/ and vi/, or a folder written by `synth`")
    p.add_argument("--split", help="file of names to use")
    p.add_argument("--preset", help="misalignment preset (default umf; a stored test set uses its own)")
    p.add_argument("--seed", type=int, help="seed (default 0; a stored test set uses its own)")
    p.add_argument("--model", action="append", default=None,
                   help="pipeline(s) to evaluate; repeat or comma-separate (default %s)" % DEFAULT_PIPELINE)
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights-dir", help="folder of NAME.safetensors + NAME.json to use instead of the shipped weights")
    p.add_argument("--limit", type=_positive_int, help="first N pairs only")
    p.add_argument("--json", help="write the summary and per-pair values here")
    p.add_argument("--metrics", help="fusion metrics: default (the papers' 8 + CC/SSIM means, VIFF), vifb (VIFB's 13), "
                   "all, or comma-separated names")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (default: torch's)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="benchmark report: misalignment sweeps, registrar x fuser grid, plots, CSV")
    p.add_argument("--data", action=_SourceAction, required=True, metavar="DIR",
                   help="aligned dataset (ir/, vi/); repeat for several datasets in one report")
    p.add_argument("--split", action=_SourceAction, metavar="FILE", help="names file for the --data/--raw just before")
    p.add_argument("--raw", action=_SourceAction, metavar="DIR", help="real-rig pairs with check points "
                   "(roadscene_raw: ir_raw/, points/, ../roadscene/vi; or ir/, vi/, points/): a TRE table")
    p.add_argument("-o", "--output", required=True, help="report folder (index.html, report.md, results.csv, "
                   "plots; cache/ makes a rerun resume)")
    p.add_argument("--quick", action="store_true", help="tiny run for CI: 2 pairs, 2-3 levels, 2 cheap pipelines")
    p.add_argument("--pipelines", help="comma-separated pipelines to sweep (default: every shipped one available)")
    p.add_argument("--grid", help="comma-separated extra pipelines for the grid table (default: the classical "
                   "registrar x fuser grid; '' for none)")
    p.add_argument("--limit", type=_positive_int, help="first N pairs of each dataset only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--examples", type=int, help="pairs per dataset shown as image grids (default 2; quick 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads")
    p.add_argument("--cache", metavar="DIR", help="per-point results for resuming (default OUT/cache)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("metrics", help="fusion metrics of one fused image (VIFB conventions)")
    p.add_argument("--ir", required=True)
    p.add_argument("--vis", required=True)
    p.add_argument("--fused", required=True)
    p.add_argument("--names", help="comma-separated subset of metric names")
    p.add_argument("--ir-norm", default="percentile", choices=["percentile", "minmax", "fixed"],
                   help="16-bit IR normalisation, as in `fuse` (8-bit images are used as they are)")
    p.add_argument("--json", action="store_true", help="print one JSON object {metric: value}")
    p.set_defaults(func=cmd_metrics)

    p = sub.add_parser("train", help="train a network (resumable; torchrun-compatible)")
    p.add_argument("stage", help="what to train: rfvif, cpstn, mrrn, difn, pwf")
    p.add_argument("--data", required=True, help="folder with ir/ and vi/ aligned training pairs")
    p.add_argument("--split", help="file of training names (e.g. roadscene/train.txt)")
    p.add_argument("--config", default="cpu", help="named recipe configuration: cpu, paper, tiny and per-model ones "
                   "(e.g. cpstn cpu-resize / cpu-supervised, rfvif cpu-fusion; alignfuse/training/recipes.py)")
    p.add_argument("--out", required=True, help="run directory (checkpoint.pt, log.jsonl, export.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--steps", type=int, help="override the number of steps")
    p.add_argument("--seed", type=int, help="seed of the initialisation and the batches (default 0; recorded in "
                   "OUT/export.json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("models", help="list the available pipelines")
    p.add_argument("--no-classical", action="store_true", help="hide the registrar+fuser grid")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "model", None) is None and args.command == "evaluate":
        args.model = [DEFAULT_PIPELINE]
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except USER_ERRORS as exc:
        if args.debug:
            raise
        _err(_message(exc))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except Exception as exc:  # a bug, not the user's doing: one line unless --debug
        if args.debug:
            raise
        _err(f"internal error ({type(exc).__name__}: {exc}); run with --debug for the traceback")
        return 1


if __name__ == "__main__":
    sys.exit(main())
