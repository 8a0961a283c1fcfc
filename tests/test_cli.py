"""End-to-end command-line behaviour on the committed samples and on broken inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alignfuse import io, warp
from alignfuse.cli import main

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
REF = Path(__file__).parent / "data" / "metric_reference"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _textured(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.random((h, w)), 2.5)
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def test_fuse_single_pair_writes_outputs(tmp_path, capsys):
    out = tmp_path / "f.png"
    code, stdout, _ = run(capsys, "fuse", str(SAMPLES / "ir/TNO_07.png"), str(SAMPLES / "vi/TNO_07.png"),
                          "-o", str(out), "--model", "phase+average", "--aligned-ir", str(tmp_path / "a.png"),
                          "--field", str(tmp_path / "f.npy"))
    assert code == 0 and "->" in stdout
    fused = np.asarray(Image.open(out))
    assert fused.shape == (256, 256)
    field = np.load(tmp_path / "f.npy")
    assert field.shape == (2, 256, 256) and field.dtype == np.float32
    assert (tmp_path / "a.png").exists()


def test_fuse_colour_keeps_colour(tmp_path, capsys):
    out = tmp_path / "c.png"
    code, _, _ = run(capsys, "fuse", str(SAMPLES / "ir/FLIR_06282.jpg"), str(SAMPLES / "vi/FLIR_06282.jpg"),
                     "-o", str(out), "--model", "identity+average")
    assert code == 0
    img = np.asarray(Image.open(out))
    vis = np.asarray(Image.open(SAMPLES / "vi/FLIR_06282.jpg"))
    assert img.shape == vis.shape
    # chroma kept: the fused image is not grey
    assert np.abs(img[..., 0].astype(int) - img[..., 2].astype(int)).mean() > 1.0


def test_register_recovers_known_shift(tmp_path, capsys):
    fixed = _textured()
    field = torch.zeros(1, 2, *fixed.shape)
    field[:, 0], field[:, 1] = 5.0, -3.0
    moving = warp.warp(torch.from_numpy(fixed)[None, None], field)[0, 0].numpy()
    io.write_image(tmp_path / "ir.png", moving)
    io.write_image(tmp_path / "vi.png", fixed)
    code, _, _ = run(capsys, "register", str(tmp_path / "ir.png"), str(tmp_path / "vi.png"), "-o",
                     str(tmp_path / "al.png"), "--field", str(tmp_path / "fl.npy"), "--model", "phase+average")
    assert code == 0
    est = np.load(tmp_path / "fl.npy")
    # moving[y, x] = fixed[y - 3, x + 5], so aligning it back needs (dx, dy) = (-5, +3)
    assert abs(np.median(est[0]) + 5) < 0.5 and abs(np.median(est[1]) - 3) < 0.5


@pytest.mark.parametrize("problem", ["truncated", "empty", "missing"])
def test_bad_input_is_one_line_error(tmp_path, capsys, problem):
    ir = tmp_path / "ir.png"
    vis = tmp_path / "vi.png"
    io.write_image(vis, _textured())
    if problem == "truncated":
        io.write_image(ir, _textured())
        data = ir.read_bytes()
        ir.write_bytes(data[: len(data) // 2])
    elif problem == "empty":
        ir.write_bytes(b"")
    code, _, err = run(capsys, "fuse", str(ir), str(vis), "-o", str(tmp_path / "o.png"), "--model",
                       "identity+average")
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("alignfuse: error:")
    assert "ir.png" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("flag", [[], ["--resize-ir"]])
def test_different_sizes_are_normal_input(tmp_path, capsys, flag):
    """An IR of another size and aspect ratio is resampled onto the visible grid with a note (no option
    needed; --resize-ir stays accepted); outputs are on the visible grid."""
    ir, vis = tmp_path / "ir.png", tmp_path / "vi.png"
    io.write_image(ir, _textured(80, 100))
    io.write_image(vis, _textured(50, 83))
    code, _, err = run(capsys, "fuse", str(ir), str(vis), "-o", str(tmp_path / "o.png"), "--model",
                       "identity+average", "--field", str(tmp_path / "f.npy"), *flag)
    assert code == 0, err
    assert "resampled onto the 83x50 visible grid" in err
    assert io.read_image(tmp_path / "o.png").data.shape == (50, 83)
    assert np.load(tmp_path / "f.npy").shape == (2, 50, 83)


def test_folder_mode_continues_and_reports(tmp_path, capsys):
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vi"
    for i in range(3):
        io.write_image(ir_dir / f"p{i}.png", _textured(48, 64, i))
        io.write_image(vis_dir / f"p{i}.png", _textured(48, 64, i + 10))
    (ir_dir / "p1.png").write_bytes(b"not an image")
    io.write_image(ir_dir / "lonely.png", _textured(48, 64))
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "fuse", "--ir-dir", str(ir_dir), "--vis-dir", str(vis_dir), "-o", str(out),
                            "--model", "identity+max", "--save-field")
    assert code == 1
    assert (out / "p0.png").exists() and (out / "p2.png").exists() and not (out / "p1.png").exists()
    assert (out / "field" / "p0.npy").exists()
    assert "p1" in err and "lonely" in err and "2/3" in stdout


def test_unknown_model_lists_known(capsys, tmp_path):
    code, _, err = run(capsys, "fuse", str(SAMPLES / "ir/TNO_07.png"), str(SAMPLES / "vi/TNO_07.png"), "-o",
                       str(tmp_path / "x.png"), "--model", "nope")
    assert code == 2 and "ecc+gff" in err


def test_models_lists_default(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "(default)" in out and "identity+average" in out


def test_metrics_json_matches_reference(capsys):
    rows = [r for r in csv.DictReader(open(REF / "reference.csv")) if r["pair"] == "pair01" and r["fused"] == "avg"]
    code, out, _ = run(capsys, "metrics", "--ir", str(REF / "pair01_ir.png"), "--vis",
                       str(REF / "pair01_vi.png"), "--fused", str(REF / "pair01_avg.png"), "--json")
    assert code == 0
    values = json.loads(out)
    for r in rows:
        assert values[r["metric"]] == pytest.approx(float(r["value"]), rel=1e-6), r["metric"]


def test_synth_is_deterministic_and_evaluate_reads_it(tmp_path, capsys):
    outs = []
    for name in ("a", "b"):
        code, _, _ = run(capsys, "synth", "--data", str(SAMPLES), "--preset", "umf", "--seed", "3", "--limit",
                         "2", "-o", str(tmp_path / name))
        assert code == 0
        outs.append(tmp_path / name)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert len(files) > 8
    for rel in files:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    manifest = json.loads((outs[0] / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["preset"] == "umf" and manifest["pairs"][0]["mean_px"] > 0
    code, stdout, _ = run(capsys, "evaluate", "--data", str(outs[0]), "--model", "identity+average",
                          "--model", "phase+average", "--json", str(tmp_path / "e.json"), "-q")
    assert code == 0 and "EPE_mean" in stdout and "Qabf" in stdout
    summary = json.loads((tmp_path / "e.json").read_text())["summary"]
    assert set(summary) == {"identity+average", "phase+average"}
    assert summary["identity+average"]["EPE_mean"]["mean"] > 0.5
    # a split naming a pair the stored set does not hold says so (it was evaluated on fewer pairs silently)
    split = tmp_path / "names.txt"
    split.write_text(f"{manifest['pairs'][0]['name']}\nNOPE_1\n")
    code, _, err = run(capsys, "evaluate", "--data", str(outs[0]), "--split", str(split), "--model",
                       "identity+average", "-q")
    assert code == 0 and "'NOPE_1' is listed in" in err and "no pair of the test set" in err


def test_evaluate_reports_stored_preset_and_rejects_a_different_one(tmp_path, capsys):
    code, _, _ = run(capsys, "synth", "--data", str(SAMPLES), "--preset", "shift:5", "--seed", "3", "--limit", "1",
                     "-o", str(tmp_path / "ts"))
    assert code == 0
    code, out, _ = run(capsys, "evaluate", "--data", str(tmp_path / "ts"), "--model", "identity+average", "-q",
                       "--json", str(tmp_path / "e.json"))
    assert code == 0 and "preset shift:5 | seed 3" in out
    payload = json.loads((tmp_path / "e.json").read_text())
    assert payload["preset"] == "shift:5" and payload["seed"] == 3
    # identity on shift:5: EPE is exactly 5*sqrt(2) and the valid-region MSE is that of the raw shift
    assert payload["summary"]["identity+average"]["EPE_mean"]["mean"] == pytest.approx(5 * 2**0.5, abs=1e-4)
    code, _, err = run(capsys, "evaluate", "--data", str(tmp_path / "ts"), "--preset", "umf", "-q")
    assert code == 2 and "shift:5" in err


def test_synth_continues_past_a_bad_pair(tmp_path, capsys):
    data = tmp_path / "d"
    for name in ("a", "b"):
        io.write_image(data / "ir" / f"{name}.png", _textured(48, 64))
        io.write_image(data / "vi" / f"{name}.png", _textured(48, 64, 1))
    (data / "ir" / "b.png").write_bytes(b"\x89PNG broken")
    code, _, err = run(capsys, "synth", "--data", str(data), "--preset", "umf", "-o", str(tmp_path / "o"))
    assert code == 1 and "b: " in err
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert [p["name"] for p in manifest["pairs"]] == ["a"]


def test_sixteen_bit_ir_and_rgba_visible(tmp_path, capsys):
    ir16 = (_textured(60, 80) * 3000 + 7000).astype(np.uint16)  # narrow radiometric band
    Image.fromarray(ir16).save(tmp_path / "ir.tif")
    rgba = (np.stack([_textured(60, 80, s) for s in (1, 2, 3, 4)], -1) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "vi.png")
    code, _, _ = run(capsys, "fuse", str(tmp_path / "ir.tif"), str(tmp_path / "vi.png"), "-o",
                     str(tmp_path / "f.png"), "--model", "identity+average", "--aligned-ir", str(tmp_path / "a.png"))
    assert code == 0
    assert np.asarray(Image.open(tmp_path / "f.png")).shape == (60, 80, 3)
    aligned = np.asarray(Image.open(tmp_path / "a.png"))
    assert aligned.min() <= 5 and aligned.max() >= 250  # percentile policy stretched the narrow band


def test_api_rejects_integer_arrays():
    from alignfuse import fuse_arrays, load_pipeline

    ir = (_textured(32, 32) * 255).astype(np.uint8)
    with pytest.raises(ValueError, match="float array in \\[0, 1\\]"):
        fuse_arrays(ir, ir, load_pipeline("identity+average"))
    with pytest.raises(ValueError, match="must lie in"):
        fuse_arrays(ir.astype(np.float32), ir.astype(np.float32), load_pipeline("identity+average"))
    nan = _textured(32, 32).astype(np.float32)
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match="ir holds 1 NaN and 0 infinite values"):
        fuse_arrays(nan, _textured(32, 32).astype(np.float32), load_pipeline("identity+average"))
    with pytest.raises(ValueError, match="must be a numpy array, got list"):
        fuse_arrays(nan.tolist(), nan, load_pipeline("identity+average"))


def test_evaluate_stored_set_survives_a_damaged_file(tmp_path, capsys):
    code, _, _ = run(capsys, "synth", "--data", str(SAMPLES), "--preset", "shift:3", "--limit", "2",
                     "-o", str(tmp_path / "ts"))
    assert code == 0
    victim = sorted((tmp_path / "ts" / "ir_warp").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])
    code, out, err = run(capsys, "evaluate", "--data", str(tmp_path / "ts"), "--model", "identity+average", "-q")
    assert code == 1 and "1 pairs" in out and victim.stem in err


def _pair_files(tmp_path: Path) -> tuple[Path, Path]:
    ir, vis = tmp_path / "ir.png", tmp_path / "vi.png"
    io.write_image(ir, _textured(48, 64, 1))
    io.write_image(vis, _textured(48, 64, 2))
    return ir, vis


@pytest.mark.parametrize("argv", [
    ("fuse", "{ir}", "{vis}", "-o", "{ir}"),
    ("fuse", "{ir}", "{vis}", "-o", "{d}/x.png", "--aligned-ir", "{d}/x.png"),
    ("fuse", "{ir}", "{vis}", "-o", "{d}/x.png", "--field", "{vis}"),  # written as vi.png.npy: allowed
    ("register", "{ir}", "{vis}", "-o", "{vis}"),
    ("fuse", "{ir}", "{vis}", "-o", "{d}/x.gif"),
])
def test_outputs_never_overwrite_inputs_and_are_checked_before_work(tmp_path, capsys, argv):
    ir, vis = _pair_files(tmp_path)
    before = ir.read_bytes(), vis.read_bytes()
    args = [a.format(ir=ir, vis=vis, d=tmp_path) for a in argv] + ["--model", "identity+average"]
    code, _, err = run(capsys, *args)
    assert (ir.read_bytes(), vis.read_bytes()) == before
    if "--field" in argv:  # the field goes to vi.png.npy, which is neither input
        assert code == 0 and (tmp_path / "vi.png.npy").exists()
        return
    assert code == 2 and err.startswith("alignfuse: error:") and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


def test_folder_mode_checks_its_options_before_work(tmp_path, capsys):
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vi"
    io.write_image(ir_dir / "a.png", _textured(48, 64, 1))
    io.write_image(vis_dir / "a.png", _textured(48, 64, 2))
    common = ["fuse", "--ir-dir", str(ir_dir), "--vis-dir", str(vis_dir), "--model", "identity+average"]
    code, _, err = run(capsys, *common, "-o", str(ir_dir))
    assert code == 2 and "input folder" in err
    (tmp_path / "file.png").write_bytes(b"x")
    code, _, err = run(capsys, *common, "-o", str(tmp_path / "file.png"))
    assert code == 2 and "not a folder" in err
    code, _, err = run(capsys, *common, "-o", str(tmp_path / "out"), "--ext", "xyz")
    assert code == 2 and "xyz" in err and not (tmp_path / "out").exists()
    code, _, _ = run(capsys, *common, "-o", str(tmp_path / "out"), "--ext", ".jpg")
    assert code == 0 and (tmp_path / "out" / "a.jpg").exists()


def test_metrics_json_is_strict_on_a_flat_image(tmp_path, capsys):
    flat = tmp_path / "flat.png"
    io.write_image(flat, np.full((32, 32), 0.4, np.float32))
    code, out, _ = run(capsys, "metrics", "--ir", str(flat), "--vis", str(flat), "--fused", str(flat), "--json")
    assert code == 0
    values = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert any(v is None for v in values.values())  # undefined metrics (e.g. Qcb) are null, not NaN


def test_malformed_device_and_limit_are_user_errors(tmp_path, capsys):
    ir, vis = _pair_files(tmp_path)
    code, _, err = run(capsys, "fuse", str(ir), str(vis), "-o", str(tmp_path / "o.png"), "--device", "gpu")
    assert code == 2 and "cpu, cuda, cuda:N or auto" in err
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--data", str(tmp_path), "--limit", "0"])
    assert exc.value.code == 2


def test_register_verbose_reports_the_field_in_full_resolution_pixels(tmp_path, capsys):
    """The registrar runs at a 384 px working size; the printed field sizes must be those of the written field."""
    ir, vis = SAMPLES / "ir/FLIR_00211.jpg", SAMPLES / "vi/FLIR_00211.jpg"
    code, out, _ = run(capsys, "register", str(ir), str(vis), "-o", str(tmp_path / "a.png"),
                       "--field", str(tmp_path / "f.npy"), "-v")
    assert code == 0
    diag = json.loads(out.splitlines()[-1])
    mag = np.sqrt((np.load(tmp_path / "f.npy").astype(np.float64) ** 2).sum(0))
    assert diag["field_mean_px"] == pytest.approx(mag.mean(), rel=1e-3)
    assert diag["field_max_px"] == pytest.approx(mag.max(), rel=1e-3)


def test_notes_name_the_file_they_are_about(tmp_path, capsys):
    ir, _ = _pair_files(tmp_path)
    rgba = (np.stack([_textured(48, 64, s) for s in (1, 2, 3, 4)], -1) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "vis_rgba.png")
    code, _, err = run(capsys, "fuse", str(ir), str(tmp_path / "vis_rgba.png"), "-o", str(tmp_path / "o.png"),
                       "--model", "identity+average")
    assert code == 0
    note = [ln for ln in err.splitlines() if "alpha" in ln]
    assert note and "vis_rgba.png" in note[0] and "ir.png" not in note[0]


def test_evaluate_split_without_pairs_names_the_split(tmp_path, capsys):
    split = tmp_path / "names.txt"
    split.write_text("nothing_here\n")
    code, _, err = run(capsys, "evaluate", "--data", str(SAMPLES), "--split", str(split), "--model", "identity+average")
    assert code == 2 and "names.txt" in err


def test_folder_subfolder_outputs_and_synth_never_overwrite_inputs(tmp_path, capsys):
    root = tmp_path / "d"
    ir_dir, vis_dir = root / "aligned_ir", root / "vi"
    io.write_image(ir_dir / "a.png", _textured(48, 64, 1))
    io.write_image(vis_dir / "a.png", _textured(48, 64, 2))
    before = (ir_dir / "a.png").read_bytes()
    code, _, err = run(capsys, "fuse", "--ir-dir", str(ir_dir), "--vis-dir", str(vis_dir), "-o", str(root),
                       "--save-aligned", "--model", "identity+average")
    assert code == 2 and "input folder" in err and (ir_dir / "a.png").read_bytes() == before
    code, _, err = run(capsys, "synth", "--data", str(SAMPLES), "-o", str(SAMPLES))
    assert code == 2 and "is the input dataset folder" in err


def test_json_output_cleans_numpy_values():
    from alignfuse.cli import _json

    out = json.loads(_json({"a": np.float32("nan"), "b": np.float64(1.5), "c": np.array([1.0, np.inf])}))
    assert out == {"a": None, "b": 1.5, "c": [1.0, None]}


def test_a_bug_inside_a_fuser_is_an_internal_error_not_a_user_error(tmp_path, capsys, monkeypatch):
    from alignfuse.baselines.fusion import AverageFuser

    def broken(self, ir, vis):
        raise ValueError("shapes do not broadcast")  # what a library bug looks like

    monkeypatch.setattr(AverageFuser, "__call__", broken)
    ir, vis = _pair_files(tmp_path)
    argv = ["fuse", str(ir), str(vis), "-o", str(tmp_path / "o.png"), "--model", "identity+average"]
    code, _, err = run(capsys, *argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and "internal error" in lines[0] and "run with --debug" in lines[0]
    assert "ValueError" in lines[0] and "Traceback" not in err
    with pytest.raises(ValueError, match="broadcast"):
        main(argv + ["--debug"])


@pytest.mark.parametrize("argv, needle", [
    (["fuse", "{ir}", "{vis}", "-o", "{d}/o.png", "--model", "nope+gff"], "unknown model"),
    (["fuse", "{ir}", "{vis}", "-o", "{d}/o.png", "--model", "defualt+gff"], "did you mean default+gff"),
    (["fuse", "{ir}", "{vis}", "-o", "{d}/o.png", "--model", "ecc+gff", "--no-local"],
     "ecc+gff takes no local option (--no-local); it applies to default, default+gff"),
    (["fuse", "{ir}", "{vis}", "-o", "{d}", "--model", "identity+average"], "is a folder"),
    (["fuse", "{ir}", "{vis}", "-o", "{d}/o.png", "--device", "cuda:x"], "cpu, cuda"),
    (["fuse", "{ir}", "{vis}", "-o", "{d}/o.png", "--model", "umf-cmgr", "--weights-dir", "{d}"],
     "weights file not found"),
    (["metrics", "--ir", "{ir}", "--vis", "{vis}", "--fused", "{vis}", "--names", "nope"], "unknown fusion metric"),
    (["evaluate", "--data", "{samples}", "--preset", "shift:x", "--model", "identity+average", "-q"], "bad preset"),
    (["train", "rfvif", "--data", "{samples}", "--out", "{d}/t", "--set", "nope=1"], "unknown override"),
    (["train", "rfvif", "--data", "{samples}", "--out", "{d}/t", "--config", "tiny", "--set", "variant=num_fab=x"],
     "num_fab"),
    (["train", "nope", "--data", "{samples}", "--out", "{d}/t"], "no training recipe"),
    (["train", "difn", "--data", "{samples}", "--out", "{d}/t", "--set", "lr=abc"], "lr expects float"),
    (["train", "difn", "--data", "{samples}", "--out", "{d}/t", "--set", "batch=0"], "batch must be > 0"),
    (["train", "rfvif", "--data", "{samples}", "--out", "{d}/t", "--set", "crop=-5"], "crop must be > 0"),
    (["train", "rfvif", "--data", "{samples}", "--out", "{d}/t", "--set", "variant=num_res_blocks=-1"],
     "num_res_blocks"),
    (["train", "rfvif", "--data", "{samples}", "--out", "{d}/t", "--config", "tiny", "--set", "objective=best"],
     "objective must be one of"),
    (["train", "rfvif", "--data", "{samples}", "--out", "{d}/t", "--config", "tiny", "--set", "fusion_int_weight=-1.0"],
     "fusion_int_weight must be >= 0"),
])
def test_what_the_user_controls_is_a_one_line_user_error(tmp_path, capsys, argv, needle):
    ir, vis = _pair_files(tmp_path)
    args = [a.format(ir=ir, vis=vis, d=tmp_path, samples=SAMPLES) for a in argv]
    code, _, err = run(capsys, *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("alignfuse: error:"), err
    assert needle in lines[0] and "internal error" not in err


def test_version(capsys):
    from alignfuse import __version__

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"alignfuse {__version__}"


def test_python_api_user_errors_keep_their_builtin_types():
    from alignfuse import checkpoints, load_pipeline
    from alignfuse.errors import UnknownNameError, UserError

    with pytest.raises(UnknownNameError, match="unknown model 'nope'") as exc:
        load_pipeline("nope")
    assert isinstance(exc.value, KeyError) and isinstance(exc.value, UserError)
    with pytest.raises(UserError, match="unknown option.*colour"):
        load_pipeline("identity+average", colour=True)  # was a TypeError (an 'internal error')
    with pytest.raises(UserError, match="unknown option.*bogus"):
        load_pipeline("rfvif", bogus=1)
    assert issubclass(checkpoints.WeightsError, UserError) and issubclass(io.ImageReadError, UserError)
    assert issubclass(io.PairingError, UserError) and issubclass(UserError, ValueError)


def test_evaluate_where_a_bug_fails_every_pair_is_an_internal_error(capsys, monkeypatch):
    from alignfuse.baselines.fusion import AverageFuser

    def broken(self, ir, vis):
        raise KeyError("fused")

    monkeypatch.setattr(AverageFuser, "__call__", broken)
    code, _, err = run(capsys, "evaluate", "--data", str(SAMPLES), "--limit", "1", "--model", "identity+average", "-q")
    assert code == 1 and "internal error" in err and "no pair could be evaluated" in err


# ------------------------------------------------------------------- found by tests/test_fuzz.py


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("alignfuse: error:") and "internal error" not in err, err
    return lines[0]


def test_metrics_errors_name_the_files(tmp_path, capsys):
    """Images of different sizes gave 'sizes differ: vis (H, W), ...' without a file name; a grey fused image
    of a colour visible one was an internal error (the metrics' ValueError)."""
    ir, vis = _pair_files(tmp_path)
    io.write_image(tmp_path / "small.png", _textured(40, 64))
    code, _, err = run(capsys, "metrics", "--ir", str(ir), "--vis", str(vis), "--fused", str(tmp_path / "small.png"))
    line = _one_error_line(err)
    assert code == 2 and "small.png" in line and "64x40" in line and "vi.png" in line
    io.write_image(tmp_path / "colour.png", np.stack([_textured(48, 64, s) for s in (3, 4, 5)], -1))
    code, _, err = run(capsys, "metrics", "--ir", str(ir), "--vis", str(tmp_path / "colour.png"), "--fused", str(vis))
    line = _one_error_line(err)
    assert code == 2 and f"{vis}: greyscale fused image" in line and "colour.png" in line


@pytest.mark.parametrize("option", ["--field", "--aligned-ir"])
def test_unwritable_outputs_fail_before_any_work(tmp_path, capsys, option):
    """An output that is an existing folder, or lies under a file, failed only when written: after the fused
    image was written, naming a hidden temporary file ('.f.npy.x1y2.tmp: Is a directory')."""
    ir, vis = _pair_files(tmp_path)
    (tmp_path / "taken.npy").mkdir()
    (tmp_path / "taken.png").mkdir()
    (tmp_path / "plain").write_text("x")
    name = "taken.npy" if option == "--field" else "taken.png"
    for target in (tmp_path / name, tmp_path / "plain" / "f.png"):
        code, _, err = run(capsys, "fuse", str(ir), str(vis), "-o", str(tmp_path / "o.png"), option, str(target),
                           "--model", "identity+average")
        line = _one_error_line(err)
        assert code == 2 and (name in line or "plain" in line) and ".tmp" not in line
        assert not (tmp_path / "o.png").exists()
    code, _, err = run(capsys, "register", str(ir), str(vis), "-o", str(tmp_path / "taken.png"),
                       "--model", "identity+average")
    assert code == 2 and "taken.png: is a folder" in _one_error_line(err)


@pytest.mark.parametrize("verb", ["fuse", "register"])
def test_an_empty_output_option_is_an_error_not_no_output(tmp_path, capsys, verb):
    """`--field ""` (e.g. an unset shell variable) wrote no field and said nothing; `--field .` was an internal
    error (ValueError from Path.with_name)."""
    ir, vis = _pair_files(tmp_path)
    for value, needle in (("", "--field: empty path"), (".", "not a file name")):
        code, _, err = run(capsys, verb, str(ir), str(vis), "-o", str(tmp_path / "o.png"), "--field", value,
                           "--model", "identity+average")
        assert code == 2 and needle in _one_error_line(err) and not (tmp_path / "o.png").exists()


def test_a_symlink_loop_as_input_is_a_user_error(tmp_path, capsys):
    """Path.resolve() raises RuntimeError on a symlink loop: it was an internal error."""
    _, vis = _pair_files(tmp_path)
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    code, _, err = run(capsys, "fuse", str(tmp_path / "loop.png"), str(vis), "-o", str(tmp_path / "o.png"),
                       "--model", "identity+average")
    assert code == 2 and "loop.png: broken symbolic link" in _one_error_line(err)


# -- options that would otherwise be ignored or lose work -----------------------------------------------------------
@pytest.mark.parametrize("option", [["--save-aligned"], ["--save-field"], ["--ext", "jpg"], ["--split", "names.txt"]])
def test_single_pair_refuses_folder_mode_options(tmp_path, capsys, option):
    code, _, err = run(capsys, "fuse", str(SAMPLES / "ir/TNO_07.png"), str(SAMPLES / "vi/TNO_07.png"),
                       "-o", str(tmp_path / "f.png"), "--model", "identity+average", *option)
    assert code == 2 and option[0] in err and "folder mode" in err
    assert not (tmp_path / "f.png").exists()


def test_folder_mode_lists_input_notes_and_refuses_one_folder_for_both(tmp_path, capsys):
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    ir = np.asarray(Image.open(SAMPLES / "ir/TNO_07.png").convert("L"))
    Image.fromarray(ir[::2, ::2]).save(tmp_path / "ir/a.png")  # half the visible size: resampled, with a note
    Image.open(SAMPLES / "vi/TNO_07.png").save(tmp_path / "vi/a.png")
    code, stdout, err = run(capsys, "fuse", "--ir-dir", str(tmp_path / "ir"), "--vis-dir", str(tmp_path / "vi"),
                            "-o", str(tmp_path / "out"), "--model", "identity+average")
    assert code == 0 and "fused 1/1" in stdout
    assert f"note: {tmp_path / 'ir' / 'a.png'} (infrared): 128x128 resampled onto the 256x256 visible grid" in err
    code, _, err = run(capsys, "fuse", "--ir-dir", str(tmp_path / "ir"), "--vis-dir", str(tmp_path / "ir"),
                       "-o", str(tmp_path / "out2"), "--model", "identity+average")
    assert code == 2 and "same folder" in err and not (tmp_path / "out2").exists()


def test_evaluate_checks_its_json_path_before_the_run(tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    code, stdout, err = run(capsys, "evaluate", "--data", str(SAMPLES), "--model", "identity+average",
                            "--json", str(tmp_path / "taken"), "-q")
    assert code == 2 and "is a folder" in err
    assert "Registration" not in stdout  # nothing was evaluated


def test_evaluate_json_never_overwrites_a_file_of_the_dataset(tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    for sub in ("ir", "vi"):
        (data / sub).mkdir(parents=True)
        shutil.copy(SAMPLES / sub / "TNO_07.png", data / sub / "TNO_07.png")
    (data / "test.txt").write_text("TNO_07\n")
    image = (data / "ir" / "TNO_07.png").read_bytes()
    for target in (data / "ir" / "TNO_07.png", data / "vi" / "new.json", data / "test.txt"):
        code, stdout, err = run(capsys, "evaluate", "--data", str(data), "--split", str(data / "test.txt"),
                                "--model", "identity+average", "--json", str(target), "-q")
        assert code == 2 and str(target) in err and "Registration" not in stdout, target
    assert (data / "ir" / "TNO_07.png").read_bytes() == image and not (data / "vi" / "new.json").exists()
    # a new results file beside the dataset's folders is fine, and so is replacing it with a later run's
    for _ in range(2):
        code, _, _ = run(capsys, "evaluate", "--data", str(data), "--model", "identity+average",
                         "--json", str(data / "results.json"), "-q")
        assert code == 0 and json.loads((data / "results.json").read_text())["data"] == str(data)
    # but not another JSON file of the dataset (a stored test set's manifest)
    (data / "manifest.json").write_text('{"preset": "umf", "seed": 0, "pairs": []}')
    code, _, err = run(capsys, "evaluate", "--data", str(data), "--split", str(data / "test.txt"), "--model",
                       "identity+average", "--json", str(data / "manifest.json"), "-q")
    assert code == 2 and "would overwrite a file of the input dataset" in err


def test_register_verbose_prints_only_json_on_stdout(tmp_path, capsys):
    code, stdout, err = run(capsys, "register", str(SAMPLES / "ir/TNO_07.png"), str(SAMPLES / "vi/TNO_07.png"),
                            "-o", str(tmp_path / "r.png"), "--model", "phase+average", "-v", "--threads", "1")
    assert code == 0 and "registered" in err
    diagnostics = json.loads(stdout)
    assert isinstance(diagnostics, dict) and diagnostics


def test_register_with_a_registration_free_pipeline_warns(tmp_path, capsys):
    code, _, err = run(capsys, "register", str(SAMPLES / "ir/TNO_07.png"), str(SAMPLES / "vi/TNO_07.png"),
                       "-o", str(tmp_path / "r.png"), "--model", "rfvif", "--field", str(tmp_path / "f.npy"))
    assert code == 0 and "rfvif aligns inside its fuser and does not register" in err and "TNO_07.png" in err
    assert not np.load(tmp_path / "f.npy").any()


def test_metric_names_may_carry_spaces(tmp_path, capsys):
    out = tmp_path / "f.png"
    assert run(capsys, "fuse", str(SAMPLES / "ir/TNO_07.png"), str(SAMPLES / "vi/TNO_07.png"), "-o", str(out),
               "--model", "identity+average")[0] == 0
    code, stdout, _ = run(capsys, "metrics", "--ir", str(SAMPLES / "ir/TNO_07.png"), "--vis",
                          str(SAMPLES / "vi/TNO_07.png"), "--fused", str(out), "--names", "Qabf, Ssim", "--json")
    assert code == 0 and set(json.loads(stdout)) == {"Qabf", "Ssim"}


def test_python_api_refuses_to_overwrite_an_input(tmp_path):
    import alignfuse

    vis = tmp_path / "vis.png"
    Image.open(SAMPLES / "vi/TNO_07.png").save(vis)
    before = vis.read_bytes()
    with pytest.raises(alignfuse.UserError, match="would overwrite the input"):
        alignfuse.fuse(SAMPLES / "ir/TNO_07.png", vis, vis, model="identity+average")
    assert vis.read_bytes() == before


def test_folder_mode_quiet_prints_no_progress_bar(tmp_path, capsys):
    (tmp_path / "ir").mkdir()
    (tmp_path / "vi").mkdir()
    Image.open(SAMPLES / "ir/TNO_07.png").save(tmp_path / "ir/a.png")
    Image.open(SAMPLES / "vi/TNO_07.png").save(tmp_path / "vi/a.png")
    args = ["fuse", "--ir-dir", str(tmp_path / "ir"), "--vis-dir", str(tmp_path / "vi"), "--model", "identity+average"]
    _, _, err = run(capsys, *args, "-o", str(tmp_path / "o1"))
    assert "pair" in err and "%" in err  # the bar
    code, stdout, err = run(capsys, *args, "-o", str(tmp_path / "o2"), "-q")
    assert code == 0 and "fused 1/1" in stdout and "%" not in err


def test_folder_mode_warns_about_outputs_this_run_did_not_write(tmp_path, capsys):
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vi"
    ir_dir.mkdir()
    vis_dir.mkdir()
    for stem in ("a", "b"):
        Image.open(SAMPLES / "ir/TNO_07.png").save(ir_dir / f"{stem}.png")
        Image.open(SAMPLES / "vi/TNO_07.png").save(vis_dir / f"{stem}.png")
    args = ["fuse", "--ir-dir", str(ir_dir), "--vis-dir", str(vis_dir), "-o", str(tmp_path / "o"), "--model",
            "identity+average", "--save-aligned", "-q"]
    code, _, err = run(capsys, *args)
    assert code == 0 and "earlier run" not in err
    (ir_dir / "b.png").unlink()  # pair b is gone: its old outputs would pass for this run's
    (vis_dir / "b.png").unlink()
    code, _, err = run(capsys, *args)
    warned = [line for line in err.splitlines() if "from an earlier run" in line]
    assert code == 0 and len(warned) == 2, err  # the fused image and the aligned IR
    assert str(tmp_path / "o") in warned[0] and "(b.png)" in warned[0]
    assert str(tmp_path / "o" / "aligned_ir") in warned[1]
    # a later run with another --ext and without --save-aligned still sees both earlier runs' leftovers
    code, _, err = run(capsys, *[a for a in args if a != "--save-aligned"], "--ext", "jpg")
    warned = [line for line in err.splitlines() if "from an earlier run" in line]
    assert code == 0 and len(warned) == 2, err
    assert "2 file(s)" in warned[0] and "a.png" in warned[0] and "b.png" in warned[0]
    assert str(tmp_path / "o" / "aligned_ir") in warned[1] and "a.png" in warned[1]


def test_folder_mode_lists_a_repeated_note_once(tmp_path, capsys):
    ir_dir, vis_dir = tmp_path / "ir", tmp_path / "vi"
    ir_dir.mkdir()
    vis_dir.mkdir()
    ir = Image.open(SAMPLES / "ir/TNO_07.png").resize((200, 160))
    for stem in ("a", "b", "c"):
        ir.save(ir_dir / f"{stem}.png")
        Image.open(SAMPLES / "vi/TNO_07.png").save(vis_dir / f"{stem}.png")
    code, _, err = run(capsys, "fuse", "--ir-dir", str(ir_dir), "--vis-dir", str(vis_dir), "-o", str(tmp_path / "o"),
                       "--model", "identity+average", "-q")
    notes = [line for line in err.splitlines() if line.startswith("alignfuse: note:")]
    assert code == 0 and len(notes) == 1, err
    assert "3 files (infrared): 200x160 resampled onto the 256x256 visible grid" in notes[0]
    assert str(ir_dir / "a.png") in notes[0] and str(ir_dir / "c.png") not in notes[0]


def test_folder_ext_error_names_the_option(tmp_path, capsys):
    code, _, err = run(capsys, "fuse", "--ir-dir", str(SAMPLES / "ir"), "--vis-dir", str(SAMPLES / "vi"), "-o",
                       str(tmp_path / "o"), "--ext", "webp")
    assert code == 2 and "--ext webp: unsupported output extension" in err and "x.webp" not in err
    code, _, err = run(capsys, "fuse", "--ir-dir", str(SAMPLES / "ir"), "--vis-dir", str(SAMPLES / "vi"), "-o",
                       str(tmp_path / "o"), "--ext", "bmp", "--bit-depth", "16")
    assert code == 2 and "--ext bmp: 16-bit output needs" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", [
    ["synth", "--data", "{d}", "-o", "{d}/vi", "-q"],
    ["report", "--data", "{d}", "-o", "{d}/vi/report", "--quick", "-q"],
    ["train", "pwf", "--data", "{d}", "--out", "{d}/ir", "--config", "tiny", "-q"],
    ["train", "pwf", "--data", "{d}", "--out", "{d}", "--config", "tiny", "-q"],
    ["report", "--data", "{d}", "--raw", "{d}", "-o", "{d}/ir_raw/report", "--quick", "-q"],
])
def test_outputs_into_the_input_dataset_are_refused_before_any_work(tmp_path, capsys, command):
    data = tmp_path / "d"
    for sub in ("ir", "vi"):
        (data / sub).mkdir(parents=True)
        Image.open(SAMPLES / f"{sub}/TNO_07.png").save(data / sub / "TNO_07.png")
    (data / "ir_raw").mkdir()  # a raw rig set's frames
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    code, _, err = run(capsys, *[part.format(d=data) for part in command])
    assert code == 2 and ("inside the input image folder" in err or "is the input dataset folder" in err), err
    assert sorted(p.relative_to(data) for p in data.rglob("*")) == before


def test_register_with_an_ablation_without_registration_warns(tmp_path, capsys):
    code, _, err = run(capsys, "fuse", str(SAMPLES / "ir/TNO_07.png"), str(SAMPLES / "vi/TNO_07.png"),
                       "-o", str(tmp_path / "f.png"), "--model", "umf-cmgr-noreg", "--field", str(tmp_path / "f.npy"))
    assert code == 0 and "umf-cmgr-noreg does not register" in err and "the field is zero" in err
    code, _, err = run(capsys, "fuse", str(SAMPLES / "ir/TNO_07.png"), str(SAMPLES / "vi/TNO_07.png"),
                       "-o", str(tmp_path / "g.png"), "--model", "identity+average", "--field", str(tmp_path / "g.npy"))
    assert code == 0 and "does not register" not in err  # the name says it


@pytest.mark.parametrize("command", ["fuse", "register"])
def test_a_bad_input_is_reported_before_the_networks_load(tmp_path, capsys, monkeypatch, command):
    """A missing IR or an undecodable visible file is a one-line error without first loading the pipeline."""
    import alignfuse.cli as cli

    def no_pipeline(args):
        raise AssertionError("the pipeline was loaded before the inputs were checked")

    monkeypatch.setattr(cli, "_load_pipeline", no_pipeline)
    vis = SAMPLES / "vi" / "TNO_07.png"
    code, _, err = run(capsys, command, str(tmp_path / "missing.png"), str(vis), "-o", str(tmp_path / "o.png"))
    assert code == 2 and "missing.png: no such file" in err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    code, _, err = run(capsys, command, str(SAMPLES / "ir" / "TNO_07.png"), str(broken), "-o",
                       str(tmp_path / "o.png"))
    assert code == 2 and "broken.png" in err, err
