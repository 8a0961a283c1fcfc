"""`alignfuse report`: exact-magnitude sweep presets, and a --quick report on the committed sample pairs."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from alignfuse import report, synth
from alignfuse.cli import main
from alignfuse.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


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


# ----------------------------------------------------------------------------------------------- report
@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    rc = main(["report", "--data", str(SAMPLES), "--raw", str(SAMPLES / "raw"), "-o", str(out), "--quick", "-q"])
    assert rc == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    return out, rows


def _value(rows, **where) -> float:
    hits = [r for r in rows if all(r[k] == v for k, v in where.items())]
    assert len(hits) == 1, (where, len(hits))
    return float(hits[0]["value"])


def test_quick_report_writes_every_output(quick):
    out, rows = quick
    for name in ["index.html", "report.md", "results.csv"] + [f"sweep_{k}.png" for k in report.QUICK_SWEEPS]:
        assert (out / name).stat().st_size > 0, name
    assert list(out.glob("examples_*.jpg"))
    page = (out / "index.html").read_text()
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")  # self-contained
    for src in re.findall(r"<img src='([^']+)'", page):
        assert (out / src).is_file(), src
    md = (out / "report.md").read_text()
    assert "alignfuse report --data" in md and "torch" in md and "date" in md
    assert {r["sweep"] for r in rows} >= {"translation", "rotation", "scale", "elastic", "grid", "time", "real_rig"}
    assert {r["role"] for r in rows} == {"pipeline", "floor", "ceiling"}
    assert {r["pipeline"] for r in rows if r["role"] == "pipeline"} >= set(report.QUICK_PIPELINES)


def test_floor_and_ceiling_structure(quick):
    _, rows = quick
    for fuser in ("gff", "average"):
        floor = [_value(rows, sweep="translation", level=report.level_text(lv), pipeline=f"identity+{fuser}",
                        role="floor", metric="EPE_mean") for lv in report.QUICK_SWEEPS["translation"]]
        assert floor[0] == pytest.approx(0, abs=1e-6)
        assert all(b > a for a, b in zip(floor, floor[1:]))  # the error of doing nothing grows with the shift
        assert floor[-1] == pytest.approx(report.QUICK_SWEEPS["translation"][-1], rel=1e-3)  # it is the shift
        # the ceiling is the floor at no misalignment, at every level
        for lv in report.QUICK_SWEEPS["translation"]:
            q = dict(sweep="translation", level=report.level_text(lv), pipeline=f"identity+{fuser}", metric="Qabf")
            assert _value(rows, role="ceiling", **q) == _value(rows, sweep="translation", level="0",
                                                                pipeline=f"identity+{fuser}", role="floor",
                                                                metric="Qabf")
    assert _value(rows, sweep="grid", level="umf", pipeline="identity+gff", role="ceiling", metric="EPE_mean") == 0


def _md_table(md: str, heading: str) -> dict[str, list[str]]:
    """The first table after ``heading`` -> {first cell: row cells}, header under ''."""
    lines = md[md.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = {}
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not set(cells[0]) <= {"-"}:
            table[cells[0] if table else ""] = cells[1:]
    return table


def test_report_md_shows_the_csv_numbers(quick):
    out, rows = quick
    md = (out / "report.md").read_text()
    sweep = _md_table(md, "### samples: EPE_mean")  # the first one: translation
    levels = report.QUICK_SWEEPS["translation"]
    assert sweep[""] == [f"{report.level_text(lv)} px" for lv in levels]
    for label, cells in sweep.items():
        if not label:
            continue
        role, _, name = label.rpartition(": ")
        for lv, cell in zip(levels, cells):
            value = _value(rows, sweep="translation", level=report.level_text(lv), pipeline=name,
                           role=role or "pipeline", metric="EPE_mean")
            assert cell == report.fmt(value), (label, lv)
    grid = _md_table(md, "| pipeline | EPE_mean | EPE_p95 | Qabf")
    header = grid.pop("")
    for label, cells in grid.items():
        role, _, name = label.rpartition(": ")
        for metric, cell in zip(header[:-1], cells):
            assert cell == report.fmt(_value(rows, sweep="grid", level="umf", pipeline=name, role=role or "pipeline",
                                             metric=metric)), (label, metric)
    raw = _md_table(md, "### raw")
    assert raw["phase+gff"][0] == report.fmt(_value(rows, sweep="real_rig", pipeline="phase+gff", metric="TRE_raw_px"))
    assert int(raw["phase+gff"][-1]) == report.QUICK_LIMIT  # --limit applies to the real-rig pairs too


def test_rerun_reads_the_cache(quick, monkeypatch):
    out, rows = quick

    def no_work(*args, **kwargs):
        raise AssertionError("a cached point was computed again")

    monkeypatch.setattr(report, "evaluate", no_work)
    monkeypatch.setattr(report, "real_rig_rows", no_work)
    plan = report.make_plan([report.Source(SAMPLES)], out, raw=[report.Source(SAMPLES / "raw")], quick=True,
                            examples=0)
    report.run_report(plan, progress=False, log=lambda *a: None)
    with (out / "results.csv").open() as f:
        again = list(csv.DictReader(f))
    key = lambda r: (r["sweep"], r["level"], r["pipeline"], r["role"], r["metric"])  # noqa: E731
    assert {key(r): r["value"] for r in again if r["sweep"] != "time"} == \
        {key(r): r["value"] for r in rows if r["sweep"] != "time"}


@pytest.mark.parametrize("argv, message", [
    (["--data", "no/such/folder"], "no/such/folder: no ir/ folder"),
    (["--data", str(SAMPLES), "--pipelines", "nosuch+gff"], "unknown model 'nosuch+gff'"),
    (["--data", str(SAMPLES), "--split", "no/such.txt"], "no/such.txt: split file does not exist"),
    (["--data", str(SAMPLES), "--raw", str(SAMPLES)], "not a real-rig folder"),
])
def test_user_errors_are_one_line(argv, message, tmp_path, capsys):
    assert main(["report", *argv, "-o", str(tmp_path / "r"), "--quick", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("alignfuse: error: ") and message in err[0], err
    assert not (tmp_path / "r").exists()


def test_split_must_follow_a_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["report", "--split", "a.txt", "--data", str(SAMPLES), "-o", str(tmp_path)])
    assert exc.value.code == 2 and "--split must follow" in capsys.readouterr().err


def test_the_recorded_command_reproduces_the_plan(tmp_path):
    """The command in the report's header parses back into the same options."""
    import shlex

    from alignfuse.cli import build_parser

    split = tmp_path / "names.txt"
    split.write_text("FLIR_00211\n")
    plan = report.make_plan([report.Source(SAMPLES, split), report.Source(SAMPLES)], tmp_path / "o",
                            raw=[report.Source(SAMPLES / "raw")], pipelines=["phase+gff"], grid=[], limit=3,
                            seed=4, cache=tmp_path / "c")
    args = build_parser().parse_args(shlex.split(plan.command())[1:])
    assert [(kind, s.path, s.split) for kind, s in args.sources] == \
        [("data", SAMPLES, split), ("data", SAMPLES, None), ("raw", SAMPLES / "raw", None)]
    assert (args.pipelines, args.grid, args.limit, args.seed, args.cache, args.quick) == \
        ("phase+gff", "", 3, 4, str(tmp_path / "c"), False)
    assert [s.name for s in plan.datasets] == ["samples", "samples_2"]


def test_image_grid_has_as_many_columns_as_the_longest_row(tmp_path):
    from PIL import Image

    from alignfuse.demo import image_grid

    img = np.linspace(0, 1, 32 * 48, dtype=np.float32).reshape(32, 48)
    image_grid([("a", [img] * 4)], tmp_path / "four.png", ["c"] * 4, dpi=40)
    image_grid([("a", [img] * 6), ("b", [img] * 6)], tmp_path / "six.png", ["c"] * 6, dpi=40)
    four, six = Image.open(tmp_path / "four.png").size, Image.open(tmp_path / "six.png").size
    assert six[0] == pytest.approx(four[0] * 6 / 4, rel=0.02) and six[1] > four[1]
    image_grid([("short", [img] * 2), ("long", [img] * 3)], tmp_path / "ragged.png", ["c"] * 3, dpi=40)
    with pytest.raises(ValueError, match="6 columns but 4 titles"):
        image_grid([("a", [img] * 6)], tmp_path / "x.png", dpi=40)


def test_source_commit_is_the_checkouts_own_and_touches_no_index(tmp_path):
    """An installed copy inside a user's git project must not report the user's commit, and `--dirty` must not
    rewrite that project's index (a concurrent `git commit` there would fail on index.lock)."""
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("git not installed")
    user = tmp_path / "userproj"
    site = user / ".venv" / "site"
    site.mkdir(parents=True)
    run = {"cwd": user, "check": True, "capture_output": True}
    subprocess.run(["git", "init", "-q"], **run)
    (user / "a.txt").write_text("hi")
    subprocess.run(["git", "add", "a.txt"], **run)
    subprocess.run(["git", "-c", "user.email=a@b", "-c", "user.name=u", "commit", "-qm", "user"], **run)
    (user / "a.txt").write_text("changed")  # dirty: describe --dirty would refresh the index
    index = user / ".git" / "index"
    before = index.stat().st_mtime_ns
    assert report._source_commit(site) == "n/a"
    assert report._source_commit(user) != "n/a"  # the checkout's own top level is reported
    assert index.stat().st_mtime_ns == before
