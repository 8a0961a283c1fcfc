"""``alignfuse report``: one self-contained benchmark report of the pipelines on one or more datasets.

Every pipeline runs on the same seeded misaligned pairs (:func:`alignfuse.evaluation.iter_samples`,
:func:`~alignfuse.evaluation.evaluate`) at every point of:

* four sweeps of one kind of misalignment at exact magnitudes (:func:`alignfuse.synth.sweep_spec`): translation
  (px, at a random direction per pair), rotation (deg), scale, elastic amplitude (x the ``umf`` elastic noise);
* the registrar x fuser grid at one preset (``umf``);
* optionally the target registration error on real rig pairs (``--raw``: a ``roadscene_raw``-style folder).

Two references per fuser: the **floor** ``identity+FUSER`` on the misaligned pair (no alignment) and the
**ceiling** ``identity+FUSER`` on the aligned pair (the ground-truth aligned IR fused by the same fuser; the same
at every level). A pipeline that does not register (``rfvif``, ``umf-cmgr-noreg``) is its own fuser's floor.

Writes into OUT: ``report.md`` and ``index.html`` (the same content; images referenced relatively),
``results.csv`` (every number: dataset, sweep, level, pipeline, role, metric, value, std, n), ``sweep_KIND.png``
(metric vs magnitude), ``examples_DATASET_PAIR.jpg`` image grids and ``cache/`` (or ``--cache DIR``; one JSON per
computed point: a rerun with the same data, split, limit, seed and names skips what is done; delete it after
changing code or weights).
"""

from __future__ import annotations

import csv
import hashlib
import html
import json
import math
import os
import platform
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterable

import numpy as np

from . import io, synth
from .errors import UserError
from .evaluation import EvalSample, evaluate, iter_samples, summarise
from .pipeline import Pipeline
from .stages import IdentityRegistrar

__all__ = ["Source", "ReportPlan", "Record", "make_plan", "run_report", "FULL_SWEEPS", "QUICK_SWEEPS"]

FULL_SWEEPS: dict[str, tuple[float, ...]] = {
    "translation": (0, 5, 10, 20, 40, 60),
    "rotation": (0, 2, 5, 10, 15),
    "scale": (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3),
    "elastic": (0, 0.5, 1, 2, 3),  # x the umf noise; folding starts near 4 (2.7 % of a 500x300 field)
}
QUICK_SWEEPS: dict[str, tuple[float, ...]] = {
    "translation": (0, 10, 30), "rotation": (0, 10), "scale": (1.0, 1.2), "elastic": (0, 2),
}
QUICK_PIPELINES = ("phase+gff", "ecc+average")
QUICK_LIMIT = 2
GRID_PRESET = "umf"
KEY_METRICS = ("EPE_mean", "EPE_p95", "Qabf", "SSIM_mean", "CC_mean")
PLOT_METRICS = ("EPE_mean", "Qabf", "SSIM_mean", "CC_mean")
TABLE_METRICS = ("EPE_mean", "Qabf")  # per sweep and dataset in report.md; the rest in the plots and the CSV
CACHE_VERSION = 1


@dataclass
class Source:
    """One dataset folder (ir/, vi/; or a raw rig folder) with an optional names file."""

    path: Path
    split: Path | None = None
    name: str = ""


@dataclass
class ReportPlan:
    """What a report computes. ``pipelines``/``grid`` None: every shipped pipeline / the classical grid that can
    be built here (the others are listed as skipped)."""

    datasets: list[Source]
    out: Path
    sweeps: dict[str, tuple[float, ...]]
    pipelines: list[str] | None = None
    grid: list[str] | None = None
    raw: list[Source] = field(default_factory=list)
    grid_preset: str = GRID_PRESET
    seed: int = 0
    limit: int | None = None
    examples: int = 2
    device: str = "cpu"
    quick: bool = False
    cache: Path | None = None  # default OUT/cache

    def example_spec(self) -> synth.SynthSpec:
        """The misalignment of the image grids: the translation level nearest 20 px."""
        levels = [lv for lv in self.sweeps.get("translation", ()) if lv] or [20]
        return synth.sweep_spec("translation", min(levels, key=lambda lv: abs(lv - 20)))

    def command(self) -> str:
        """The command line that reproduces this report."""
        parts = ["alignfuse", "report"]
        for flag, sources in (("--data", self.datasets), ("--raw", self.raw)):
            for s in sources:
                parts += [flag, str(s.path)] + (["--split", str(s.split)] if s.split else [])
        parts += ["-o", str(self.out)] + (["--quick"] if self.quick else [])
        if self.pipelines != (list(QUICK_PIPELINES) if self.quick else None):
            parts += ["--pipelines", ",".join(self.pipelines or [])]
        if self.grid != ([] if self.quick else None):
            parts += ["--grid", ",".join(self.grid or [])]
        if self.limit and not (self.quick and self.limit == QUICK_LIMIT):
            parts += ["--limit", str(self.limit)]
        parts += ["--seed", str(self.seed)] + (["--device", self.device] if self.device != "cpu" else [])
        parts += ["--cache", str(self.cache)] if self.cache else []
        return " ".join(shlex.quote(p) for p in parts)


@dataclass
class Record:
    """One summarised point: a pipeline (role pipeline, floor or ceiling) at one level of one sweep."""

    dataset: str
    sweep: str  # translation, rotation, scale, elastic, grid, time, real_rig
    level: str
    pipeline: str
    role: str
    summary: dict[str, dict[str, float]]
    n: int

    def value(self, metric: str) -> float:
        return self.summary.get(metric, {}).get("mean", float("nan"))


# ------------------------------------------------------------------------------------------------ plan
def _unique_names(sources: list[Source]) -> None:
    seen: dict[str, int] = {}
    for s in sources:
        base = s.name or s.path.resolve().name
        seen[base] = seen.get(base, 0) + 1
        s.name = base if seen[base] == 1 else f"{base}_{seen[base]}"


def make_plan(datasets: list[Source], out: Path, raw: Iterable[Source] = (), pipelines: list[str] | None = None,
              grid: list[str] | None = None, quick: bool = False, limit: int | None = None, seed: int = 0,
              examples: int | None = None, device: str = "cpu", cache: Path | None = None) -> ReportPlan:
    """Check the folders and the options (a UserError for what the user got wrong) -> the plan."""
    if not datasets:
        raise UserError("report needs at least one --data folder")
    if examples is not None and examples < 0:
        raise UserError(f"--examples must be >= 0, got {examples}")
    raw = list(raw)
    for s in datasets:
        if (s.path / "manifest.json").exists():
            raise UserError(f"{s.path}: is a stored test set; report misaligns aligned pairs itself (give ir/, vi/)")
        for sub in ("ir", "vi"):
            if not (s.path / sub).is_dir():
                raise UserError(f"{s.path}: no {sub}/ folder (expected an aligned dataset with ir/ and vi/)")
    for s in datasets + raw:
        if s.split is not None and not s.split.is_file():
            raise UserError(f"{s.split}: split file does not exist")
    for s in raw:
        _raw_layout(s.path)  # fails early on a wrong folder
    _unique_names(datasets)
    _unique_names(raw)
    if quick:
        pipelines = list(pipelines or QUICK_PIPELINES)
        grid = list(grid) if grid is not None else []
        limit = limit or QUICK_LIMIT
    return ReportPlan(datasets, out, dict(QUICK_SWEEPS if quick else FULL_SWEEPS), pipelines, grid, raw,
                      seed=seed, limit=limit, examples=(1 if quick else 2) if examples is None else examples,
                      device=device, quick=quick, cache=cache)


def _default_names(classical: bool) -> list[str]:
    from .registry import list_pipelines

    registered = list(list_pipelines(classical=False))
    return [n for n in list_pipelines() if n not in registered] if classical else registered


def build_pipelines(names: list[str] | None, classical: bool,
                    device: str) -> tuple[dict[str, Pipeline], dict[str, str]]:
    """{name: pipeline}, {skipped name: why}. Explicit names must build (the error says why); of the default
    list, those needing an extra or weights that are not here are skipped."""
    from .api import load_pipeline

    pipes, skipped = {}, {}
    for name in names if names is not None else _default_names(classical):
        try:
            pipes[name] = load_pipeline(name, device=device)
        except UserError as exc:  # MissingDependency, WeightsError
            if names is not None:
                raise
            skipped[name] = str(exc)
    return pipes, skipped


def fuser_key(pipe: Pipeline) -> str:
    """Short name of a pipeline's fuser: ``gff``, ``average``, ..., or the fusing network's class (``difn``)."""
    from .baselines import FUSERS

    by_class = {cls: name for name, cls in FUSERS.items()}
    if type(pipe.fuser) in by_class:
        return by_class[type(pipe.fuser)]
    return type(getattr(pipe.fuser, "net", pipe.fuser)).__name__.lower()


def reference_runs(pipes: dict[str, Pipeline], swept: list[str]) -> dict[str, str]:
    """{fuser key: the run that is its floor/ceiling}: a swept pipeline that does not register, else
    ``identity+KEY`` (added to ``pipes`` when missing)."""
    refs: dict[str, str] = {}
    for name in list(pipes):
        key = fuser_key(pipes[name])
        if key in refs:
            continue
        free = [n for n in swept if isinstance(pipes[n].registrar, IdentityRegistrar) and fuser_key(pipes[n]) == key]
        if free:
            refs[key] = free[0]
        else:
            ref = f"identity+{key}"
            if ref not in pipes:
                pipes[ref] = Pipeline(registrar=IdentityRegistrar(), fuser=pipes[name].fuser, name=ref).to(
                    pipes[name].device)
            refs[key] = ref
    return refs


# ------------------------------------------------------------------------------------------------ cache
class PointCache:
    """One JSON file per computed point under ``folder``, named by a hash of what determines it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: dict) -> Path:
        digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return self.folder / f"{digest}.json"

    def get(self, key: dict) -> dict | None:
        path = self._path(key)
        try:
            entry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return entry["value"] if entry.get("key") == key else None

    def put(self, key: dict, value: dict) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "value": value}))
        tmp.replace(path)


def _point_key(plan: ReportPlan, source: Source, what: str, pipeline: str) -> dict:
    return {"v": CACHE_VERSION, "data": str(source.path.resolve()), "split": str(source.split.resolve())
            if source.split else None, "limit": plan.limit, "seed": plan.seed, "what": what, "pipeline": pipeline}


# ------------------------------------------------------------------------------------------------ work
def _sweep_specs(plan: ReportPlan) -> list[str]:
    names = ["none"] + [synth.sweep_spec(k, lv).name for k, levels in plan.sweeps.items() for lv in levels]
    return list(dict.fromkeys(names))


def _tasks(plan: ReportPlan, swept: list[str], grid: list[str], refs: dict[str, str],
           pipes: dict[str, Pipeline]) -> list[tuple[str, list[str]]]:
    """(preset, runs) for one dataset: swept pipelines and their floors at every sweep point, every floor at
    ``none`` (the ceilings), the grid at its preset."""
    swept_refs = [refs[fuser_key(pipes[n])] for n in swept]
    tasks: dict[str, list[str]] = {}
    for spec in _sweep_specs(plan):
        tasks[spec] = swept + swept_refs + (list(refs.values()) if spec == "none" else [])
    grid_runs = swept + grid + [refs[fuser_key(pipes[n])] for n in swept + grid]
    tasks[plan.grid_preset] = tasks.get(plan.grid_preset, []) + grid_runs
    return [(spec, list(dict.fromkeys(runs))) for spec, runs in tasks.items()]


def compute(plan: ReportPlan, pipes: dict[str, Pipeline], tasks: list[tuple[str, list[str]]], cache: PointCache,
            counts: dict[str, int], progress: bool = True) -> dict[tuple[str, str, str], dict]:
    """Evaluate every (dataset, preset, run) not in the cache -> {(dataset, preset, run): {rows, failures}}."""
    from tqdm import tqdm

    bar = tqdm(total=sum(counts[s.name] * len(runs) for s in plan.datasets for _, runs in tasks),
               desc="report", unit="pair", disable=not progress, dynamic_ncols=True)
    results = {}
    for source in plan.datasets:
        for spec, runs in tasks:
            samples = None
            for run in runs:
                key = _point_key(plan, source, spec, run)
                value = cache.get(key)
                if value is None:
                    bar.set_postfix_str(f"{source.name} {spec} {run}", refresh=False)
                    if samples is None:  # read and misalign once; every run sees the same samples
                        samples = list(iter_samples(source.path, spec, plan.seed, source.split, plan.limit).samples)
                    rows, failures = evaluate(pipes[run], iter(samples), progress=False)
                    value = {"rows": rows, "failures": [[f.name, f.message] for f in failures]}
                    cache.put(key, value)
                results[(source.name, spec, run)] = value
                bar.update(counts[source.name])
    bar.close()
    return results


def _record(dataset: str, sweep: str, level: str, pipeline: str, role: str, value: dict) -> Record:
    rows = value["rows"]
    return Record(dataset, sweep, level, pipeline, role, summarise(rows) if rows else {}, len(rows))


def level_text(level: float) -> str:
    return f"{float(level):g}"


def collect(plan: ReportPlan, results: dict, swept: list[str], grid: list[str], refs: dict[str, str],
            pipes: dict[str, Pipeline]) -> list[Record]:
    """The records of the report: sweeps (pipelines, floors, ceilings), the grid, the time per pair."""
    records = []
    keys = list(dict.fromkeys(fuser_key(pipes[n]) for n in swept))
    for source in plan.datasets:
        d = source.name
        for kind, levels in plan.sweeps.items():
            for lv in levels:
                spec = synth.sweep_spec(kind, lv).name
                for name in swept:
                    records.append(_record(d, kind, level_text(lv), name, "pipeline", results[(d, spec, name)]))
                for key in keys:
                    records.append(_record(d, kind, level_text(lv), f"identity+{key}", "floor",
                                           results[(d, spec, refs[key])]))
                    records.append(_record(d, kind, level_text(lv), f"identity+{key}", "ceiling",
                                           results[(d, "none", refs[key])]))
        for name in dict.fromkeys(swept + grid):
            records.append(_record(d, "grid", plan.grid_preset, name, "pipeline", results[(d, plan.grid_preset, name)]))
        for key in dict.fromkeys(fuser_key(pipes[n]) for n in swept + grid):
            for role, spec in (("floor", plan.grid_preset), ("ceiling", "none")):
                records.append(_record(d, "grid", plan.grid_preset, f"identity+{key}", role,
                                       results[(d, spec, refs[key])]))
        for name in dict.fromkeys(swept + grid):
            seconds = [r["seconds"] for (dd, _, run), v in results.items() if (dd, run) == (d, name)
                       for r in v["rows"]]
            if seconds:
                records.append(Record(d, "time", "all", name, "pipeline",
                                      {"seconds": {"mean": float(np.mean(seconds)), "std": float(np.std(seconds))}},
                                      len(seconds)))
    return records


# ------------------------------------------------------------------------------------------- real rigs
def _raw_layout(folder: Path) -> tuple[Path, Path, Path]:
    """(ir, vis, points) folders: ``ir/``, ``vi/``, ``points/`` (``samples/raw``) or ``roadscene_raw``'s
    ``ir_raw/`` and ``points/`` with the visible frames in ``../roadscene/vi``."""
    ir = folder / "ir_raw" if (folder / "ir_raw").is_dir() else folder / "ir"
    vis = folder / "vi" if (folder / "vi").is_dir() else folder.parent / "roadscene" / "vi"
    points = folder / "points"
    for d in (ir, vis, points):
        if not d.is_dir():
            raise UserError(f"{folder}: not a real-rig folder ({d} missing; expected ir/ or ir_raw/, vi/ or "
                            "../roadscene/vi, and points/)")
    return ir, vis, points


def real_rig_rows(pipe: Pipeline, source: Source, limit: int | None = None) -> dict:
    """TRE (raw IR px) of ``pipe`` and of doing nothing on the (first ``limit``) pairs of a real-rig folder with
    check points -> {rows, failures}."""
    from .api import register_arrays
    from .metrics import target_registration_error

    ir_dir, vis_dir, points_dir = _raw_layout(source.path)
    names = io.read_split(source.split) if source.split else None
    pairs, _ = io.pair_folders(ir_dir, vis_dir, names=names)
    pairs = [p for p in pairs if (points_dir / f"{p[0]}.csv").exists()][:limit]
    rows, failures = [], []
    for stem, ir_path, vis_path in pairs:
        try:
            pair = io.load_pair(ir_path, vis_path)
            points = np.loadtxt(points_dir / f"{stem}.csv", delimiter=",", skiprows=1, ndmin=2)
            t0 = time.perf_counter()
            result = register_arrays(pair.ir, pair.vis, pipe, ir_size=pair.ir_size, warn=False)
            seconds = time.perf_counter() - t0
            nothing = io.field_to_ir_coordinates(np.zeros_like(result.field), result.ir_size or pair.ir_size)
            rows.append({"name": stem, "TRE_raw_px": target_registration_error(result.ir_coordinates(), points),
                         "identity_TRE_raw_px": target_registration_error(nothing, points), "seconds": seconds})
        except (UserError, OSError) as exc:
            failures.append([stem, str(exc)])
    return {"rows": rows, "failures": failures}


def real_rig_records(plan: ReportPlan, pipes: dict[str, Pipeline], swept: list[str], cache: PointCache) -> list[Record]:
    """One record per registering pipeline and real-rig folder: TRE mean/std, median, worst, share within 5 px,
    the TRE of doing nothing on the same pairs, seconds."""
    records = []
    registering = [n for n in swept if not isinstance(pipes[n].registrar, IdentityRegistrar)]
    for source in plan.raw:
        for name in registering:  # a pipeline that does not register scores the "no alignment" column
            key = _point_key(plan, source, "real_rig", name)
            value = cache.get(key)
            if value is None:
                value = real_rig_rows(pipes[name], source, plan.limit)
                cache.put(key, value)
            rows = value["rows"]
            summary = summarise(rows) if rows else {}
            if rows:
                tre = np.array([r["TRE_raw_px"] for r in rows])
                summary["TRE_median_raw_px"] = {"mean": float(np.median(tre)), "std": float("nan")}
                summary["TRE_max_raw_px"] = {"mean": float(tre.max()), "std": float("nan")}
                summary["within_5px"] = {"mean": float((tre <= 5).mean()), "std": float("nan")}
            records.append(Record(source.name, "real_rig", "", name, "pipeline", summary, len(rows)))
    return records


# ------------------------------------------------------------------------------------------- outputs
def fmt(value: float) -> str:
    """How report.md and index.html print a number (the CSV holds it in full)."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"


def write_csv(records: list[Record], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "sweep", "level", "pipeline", "role", "metric", "value", "std", "n"])
        for r in records:
            for metric, s in r.summary.items():
                w.writerow([r.dataset, r.sweep, r.level, r.pipeline, r.role, metric, f"{s['mean']:.10g}",
                            f"{s['std']:.10g}", r.n])
    tmp.replace(path)


def _lookup(records: list[Record]) -> dict[tuple[str, str, str, str, str], Record]:
    return {(r.dataset, r.sweep, r.level, r.pipeline, r.role): r for r in records}


def plot_sweep(kind: str, levels: tuple[float, ...], records: list[Record], datasets: list[str], path: Path) -> None:
    """Metric vs magnitude, one row per dataset: pipelines solid, floors dashed, ceilings dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _lookup(records)
    ours = [r for r in records if r.sweep == kind]
    names = list(dict.fromkeys(r.pipeline for r in ours if r.role == "pipeline"))
    refs = list(dict.fromkeys(r.pipeline for r in ours if r.role != "pipeline"))
    colours = plt.get_cmap("tab20")
    x = [float(lv) for lv in levels]
    fig, axes = plt.subplots(len(datasets), len(PLOT_METRICS), figsize=(4.2 * len(PLOT_METRICS), 3.2 * len(datasets)),
                             squeeze=False)
    for row, d in enumerate(datasets):
        for col, metric in enumerate(PLOT_METRICS):
            ax = axes[row, col]
            for i, name in enumerate(names):
                y = [table[(d, kind, level_text(lv), name, "pipeline")].value(metric) for lv in levels]
                ax.plot(x, y, "-o", ms=3, lw=1.3, color=colours((2 * i) % 20 + (2 * i // 20) % 2), label=name)
            for j, ref in enumerate(refs):
                grey = str(0.1 + 0.5 * j / max(1, len(refs)))
                for role, style in (("floor", "--"), ("ceiling", ":")):
                    if metric.startswith("EPE") and (role == "ceiling" or j > 0):
                        continue  # the EPE of doing nothing does not depend on the fuser; of the ceiling it is 0
                    y = [table[(d, kind, level_text(lv), ref, role)].value(metric) for lv in levels]
                    label = "floor: no alignment" if metric.startswith("EPE") else f"{role}: {ref}"
                    ax.plot(x, y, style, lw=1.6, color=grey, label=label)
            ax.set_title(f"{d}: {metric}", fontsize=9)
            ax.set_xlabel(f"{kind} ({synth.SWEEP_KINDS[kind][0]})", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    ncol = min(5, len(labels))
    legend_rows = math.ceil(len(labels) / ncol)
    fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, min(0.5, 0.28 * legend_rows / fig.get_size_inches()[1]), 1, 1))
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


def write_examples(plan: ReportPlan, source: Source, pipes: dict[str, Pipeline], swept: list[str],
                   refs: dict[str, str]) -> list[Path]:
    """Image grids (one per pair): one row per pipeline, floor and ceiling; VIS | IR in | IR registered | fused."""
    from .api import fuse_arrays
    from .demo import image_grid

    spec = plan.example_spec()
    keys = list(dict.fromkeys(fuser_key(pipes[n]) for n in swept))
    paths = []
    count = min(plan.examples, plan.limit or plan.examples)
    for s in iter_samples(source.path, spec.name, plan.seed, source.split, count).samples:
        if not isinstance(s, EvalSample):
            continue
        aligned = EvalSample(s.name, s.ir_gt, s.ir_gt, s.vis, np.zeros_like(s.field), np.ones_like(s.valid))
        rows = []
        for label, run, sample in ([(n, n, s) for n in swept] + [(f"floor: identity+{k}", refs[k], s) for k in keys]
                                   + [(f"ceiling: identity+{k}", refs[k], aligned) for k in keys]):
            result = fuse_arrays(sample.ir_warp, sample.vis, pipes[run], warn=False)
            rows.append((label, [sample.vis, sample.ir_warp, result.aligned_ir, result.fused]))
        path = plan.out / f"examples_{_slug(source.name)}_{_slug(s.name)}.jpg"
        image_grid(rows, path, ["visible", f"infrared in ({spec.name}; ceiling: aligned)", "infrared registered",
                                "fused"], dpi=50)
        paths.append(path)
    return paths


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


# ---------------------------------------------------------------------------------------- documents
# A document is a list of blocks: ("h1"|"h2"|"h3"|"p", text), ("pre", text), ("table", header, rows),
# ("img", file, caption). Both renderers take the same blocks, so report.md and index.html agree.
def render_md(blocks: list[tuple]) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3"):
            out.append("#" * int(kind[1]) + " " + b[1])
        elif kind == "p":
            out.append(b[1])
        elif kind == "pre":
            out.append("```\n" + b[1] + "\n```")
        elif kind == "table":
            out.append("\n".join(["| " + " | ".join(b[1]) + " |", "|" + "---|" * len(b[1])]
                                 + ["| " + " | ".join(row) + " |" for row in b[2]]))
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text, quote=False))
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


_CSS = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f0f0f0}"
        "img{max-width:100%}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}code{background:#f3f3f3}")


def render_html(blocks: list[tuple], title: str) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body>"]
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "h3", "p"):
            out.append(f"<{kind}>{_inline_html(b[1])}</{kind}>")
        elif kind == "pre":
            out.append(f"<pre>{html.escape(b[1])}</pre>")
        elif kind == "table":
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b[1])
            body = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in b[2])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            out.append(f"<figure><img src='{html.escape(b[1])}' alt='{html.escape(b[2])}'>"
                       f"<figcaption>{_inline_html(b[2])}</figcaption></figure>")
    return "\n".join(out) + "\n</body></html>\n"


def _source_commit(root: Path | None = None) -> str:
    """The git commit of alignfuse's own source checkout (an editable install), else "n/a".

    Only when the repository's top level is the package's own checkout (``src/alignfuse`` two levels below it): an
    installed copy inside a user's project would otherwise report the user's commit. The ``-dirty`` mark comes from
    ``status`` with ``--no-optional-locks``, which reads the index without refreshing (writing) it; ``describe
    --dirty`` rewrites it (git 2.39)."""
    root = (root or Path(__file__).resolve().parents[2]).resolve()
    try:
        git = ["git", "--no-optional-locks", "-C", str(root)]
        top = subprocess.run([*git, "rev-parse", "--show-toplevel"], capture_output=True, text=True, timeout=10)
        if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
            return "n/a"
        commit = subprocess.run([*git, "describe", "--always"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or "n/a"
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
        return f"{commit}-dirty" if changed and commit != "n/a" else commit
    except (OSError, subprocess.SubprocessError):
        return "n/a"


def _environment(device: str) -> list[tuple[str, str]]:
    import torch

    import alignfuse

    commit = _source_commit()
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    accel = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else "none used"
    return [("date", datetime.now().astimezone().isoformat(timespec="seconds")),
            ("machine", f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} CPUs, "
                        f"{torch.get_num_threads()} torch threads; device {device} (GPU: {accel})"),
            ("versions", f"alignfuse {alignfuse.__version__} (git {commit}), torch {torch.__version__}, "
                         f"numpy {np.__version__}, Python {platform.python_version()}")]


def _sweep_table(table: dict, d: str, kind: str, levels: tuple[float, ...], metric: str, rows: list[tuple[str, str]]):
    header = ["pipeline"] + [f"{level_text(lv)} {synth.SWEEP_KINDS[kind][0]}" for lv in levels]
    body = []
    for name, role in rows:
        label = name if role == "pipeline" else f"{role}: {name}"
        body.append([label] + [fmt(table[(d, kind, level_text(lv), name, role)].value(metric)) for lv in levels])
    return ("table", header, body)


def build_document(plan: ReportPlan, records: list[Record], counts: dict[str, int], swept: list[str],
                   grid: list[str], skipped: dict[str, str], failures: dict[str, list], plots: dict[str, str],
                   examples: list[Path], seconds: float) -> list[tuple]:
    from .baselines import REGISTRARS

    table = _lookup(records)
    names = [s.name for s in plan.datasets]
    b: list[tuple] = [("h1", "alignfuse report" + (" (quick)" if plan.quick else ""))]
    b.append(("pre", plan.command()))
    pipeline_seconds = sum(r.value("seconds") * r.n for r in records if r.sweep == "time")
    b.append(("table", ["run", ""], _environment(plan.device) + [
        ("run time", f"{seconds / 60:.1f} min (this invocation; points in the cache are not recomputed)"),
        ("pipeline time", f"{pipeline_seconds / 60:.1f} min (sum of the per-pair seconds of every point)")]))
    b.append(("p", f"Seed {plan.seed}: each pair's misalignment depends only on the seed and its name, so every "
                   "pipeline sees the same pairs at every point. Registration metrics compare the registered IR with "
                   "the ground-truth IR inside the valid region (EPE in px); fusion metrics are scored against the "
                   "visible image and the **aligned** IR (8-bit, VIFB conventions), so ghosting costs. Floor = "
                   "`identity+FUSER` on the misaligned pair (no alignment); ceiling = the same fuser on the aligned "
                   "pair. `results.csv` holds every number (mean, population std, n) and all fusion metrics."))
    b.append(("table", ["dataset", "folder", "split", "pairs"],
              [(s.name, str(s.path), str(s.split or "all"), str(counts[s.name])) for s in plan.datasets]))
    if skipped:
        b.append(("p", "Skipped (not available here): " + "; ".join(f"`{n}` ({why})" for n, why in skipped.items())))

    b.append(("h2", f"Registrar x fuser grid (preset `{plan.grid_preset}`)"))
    grid_names = list(dict.fromkeys(swept + grid))
    for d in names:
        pairs = [(n.partition("+")[0], n.partition("+")[2]) for n in grid_names if n.partition("+")[0] in REGISTRARS]
        regs, fusers = list(dict.fromkeys(r for r, _ in pairs)), list(dict.fromkeys(f for _, f in pairs))
        b.append(("h3", f"{d}"))
        if pairs:
            b.append(("p", "Qabf per registrar (rows) and fuser (columns); EPE_mean (px) of the registrar."))
            body = []
            for reg in regs:
                cells = [table.get((d, "grid", plan.grid_preset, f"{reg}+{f}", "pipeline")) for f in fusers]
                epe = next((c.value("EPE_mean") for c in cells if c is not None), float("nan"))
                body.append([reg, fmt(epe)] + [fmt(c.value("Qabf")) if c else "" for c in cells])
            b.append(("table", ["registrar", "EPE_mean"] + fusers, body))
        rows = [table[(d, "grid", plan.grid_preset, n, "pipeline")] for n in grid_names]
        rows += [r for r in records if r.dataset == d and r.sweep == "grid" and r.role != "pipeline"]
        b.append(("table", ["pipeline", *KEY_METRICS, "seconds", "suspect", "n"],
                  [[r.pipeline if r.role == "pipeline" else f"{r.role}: {r.pipeline}"]
                   + [fmt(r.value(m)) for m in (*KEY_METRICS, "seconds", "suspect")] + [str(r.n)] for r in rows]))

    for kind, levels in plan.sweeps.items():
        unit = synth.SWEEP_KINDS[kind][0]
        b.append(("h2", f"Sweep: {kind} ({unit})"))
        caption = f"{kind}: {', '.join(PLOT_METRICS)} vs magnitude; floors dashed, ceilings dotted"
        b.append(("img", plots[kind], caption))
        refs = list(dict.fromkeys(r.pipeline for r in records if r.sweep == kind and r.role != "pipeline"))
        for d in names:
            for metric in TABLE_METRICS:
                rows = [(n, "pipeline") for n in swept] + [(r, "floor") for r in refs]
                if not metric.startswith("EPE"):
                    rows += [(r, "ceiling") for r in refs]
                b.append(("h3", f"{d}: {metric}"))
                b.append(_sweep_table(table, d, kind, levels, metric, rows))

    b.append(("h2", "Time per pair (s, mean over every point computed)"))
    time_rows = [[n] + [fmt(table[(d, "time", "all", n, "pipeline")].value("seconds"))
                        if (d, "time", "all", n, "pipeline") in table else "–" for d in names] for n in grid_names]
    b.append(("table", ["pipeline", *names], time_rows))

    if plan.raw:
        b.append(("h2", "Real rig pairs: target registration error (raw IR px)"))
        b.append(("p", "Raw thermal frames against their visible crops, homography ground truth; TRE = mean "
                       "check-point error in raw IR pixels; no alignment = resampling the IR onto the visible grid "
                       "only. Pipelines that do not register are not listed (their TRE is the no-alignment one)."))
        for s in plan.raw:
            recs = [r for r in records if r.sweep == "real_rig" and r.dataset == s.name]
            body = [[r.pipeline] + [fmt(r.value(m)) for m in ("TRE_raw_px", "TRE_median_raw_px", "TRE_max_raw_px",
                                                              "within_5px", "identity_TRE_raw_px", "seconds")]
                    + [str(r.n)] for r in recs]
            b.append(("h3", f"{s.name} ({s.split or 'all pairs'})"))
            b.append(("table", ["pipeline", "TRE mean", "median", "worst", "<= 5 px", "no alignment", "seconds", "n"],
                      body))

    if examples:
        b.append(("h2", f"Examples (`{plan.example_spec().name}`)"))
        for p in examples:
            b.append(("img", p.name, p.stem.removeprefix("examples_")))
    lines = [f"`{run}` on {d} `{spec}`: {len(f)} failed, e.g. {f[0][0]}: {f[0][1]}" for (d, spec, run), f in
             failures.items() if f]
    if lines:
        b.append(("h2", "Failures"))
        b += [("p", line) for line in lines]
    return b


# ------------------------------------------------------------------------------------------------ run
def run_report(plan: ReportPlan, progress: bool = True, log=print) -> Path:
    """Compute (or read from OUT/cache) every point of the plan and write the report; -> OUT/index.html."""
    t0 = time.perf_counter()
    pipes, skipped = build_pipelines(plan.pipelines, classical=False, device=plan.device)
    if not pipes:
        raise UserError("no pipeline to report on: " + "; ".join(f"{n}: {w}" for n, w in skipped.items()))
    swept = list(pipes)
    grid_pipes, grid_skipped = build_pipelines(plan.grid, classical=True, device=plan.device)
    skipped.update(grid_skipped)
    pipes.update({k: v for k, v in grid_pipes.items() if k not in pipes})
    grid = [n for n in grid_pipes if n not in swept]
    refs = reference_runs(pipes, swept)
    tasks = _tasks(plan, swept, grid, refs, pipes)
    counts = {s.name: iter_samples(s.path, "none", plan.seed, s.split, plan.limit).count for s in plan.datasets}
    log(f"report: {len(plan.datasets)} dataset(s) ({', '.join(f'{k} {v} pairs' for k, v in counts.items())}), "
        f"{len(swept)} swept pipelines, {len(grid)} more in the grid, {len(tasks)} presets -> {plan.out}")
    plan.out.mkdir(parents=True, exist_ok=True)
    cache = PointCache(plan.cache or plan.out / "cache")
    results = compute(plan, pipes, tasks, cache, counts, progress)
    records = collect(plan, results, swept, grid, refs, pipes) + real_rig_records(plan, pipes, swept, cache)
    write_csv(records, plan.out / "results.csv")
    plots = {}
    for kind, levels in plan.sweeps.items():
        plots[kind] = f"sweep_{kind}.png"
        plot_sweep(kind, levels, records, [s.name for s in plan.datasets], plan.out / plots[kind])
    examples = [p for s in plan.datasets for p in write_examples(plan, s, pipes, swept, refs)] if plan.examples else []
    failures = {k: v["failures"] for k, v in results.items()}
    blocks = build_document(plan, records, counts, swept, grid, skipped, failures, plots, examples,
                            time.perf_counter() - t0)
    _write_text(plan.out / "report.md", render_md(blocks))
    _write_text(plan.out / "index.html", render_html(blocks, "alignfuse report"))
    return plan.out / "index.html"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)

