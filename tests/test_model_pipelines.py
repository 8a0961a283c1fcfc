"""Network pipelines built from exported weights; the learned registrar's diagnostics and fallback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from alignfuse import warp
from alignfuse.api import fuse_arrays
from alignfuse.model_pipelines import WEIGHT_NAMES, weights_available
from alignfuse.registration import DeformableRegistrar
from alignfuse.registry import create_pipeline
from alignfuse.training.recipes import TrainArgs, run_recipe

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """Export tiny CPSTN/MRRN/DIFN/RFVIF/PWF weights (2 training steps each) under the shipped names."""
    root = tmp_path_factory.mktemp("weights")
    torch.set_num_threads(1)
    for model in ("cpstn", "difn", "rfvif", "pwf"):
        run_recipe(TrainArgs(model, SAMPLES, None, "tiny", root / model, overrides={"steps": 2}, progress=False))
    run_recipe(TrainArgs("mrrn", SAMPLES, None, "tiny", root / "mrrn",
                         overrides={"steps": 2, "translator": str(root / "cpstn" / "export.safetensors")},
                         progress=False))
    for model, name in WEIGHT_NAMES.items():
        for ext in (".safetensors", ".json"):
            shutil.copy(root / model.removesuffix("-paper") / f"export{ext}", root / f"{name}{ext}")
    return root


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(np.random.default_rng(seed).random((h, w)), 3.0)
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


@pytest.mark.parametrize("name", ["umf-cmgr", "umf-cmgr-noreg", "umf-reg+gff", "umf-mrrn+gff", "umf-nocpstn+gff",
                                  "umf-nocpstn+difn", "mrrn+difn", "mrrn+gff", "rfvif", "rfvif-paper", "default", "default+gff",
                                  "default+pwf"])
def test_pipelines_run_on_odd_sizes_and_colour(tiny_weights, name):
    pipe = create_pipeline(name, weights_dir=tiny_weights)
    ir = _texture(333, 517)
    vis = np.stack([_texture(333, 517, 1)] * 3, axis=-1)
    res = fuse_arrays(ir, vis, pipe)
    assert res.fused.shape == (333, 517, 3) and res.aligned_ir.shape == (333, 517)
    assert res.field.shape == (2, 333, 517)
    assert np.isfinite(res.fused).all() and 0 <= res.fused.min() and res.fused.max() <= 1


def test_unet_registrar_weights_load_in_the_umf_pipeline(tiny_weights, tmp_path):
    from alignfuse.models.mrrn import UNetRegistrar

    run_recipe(TrainArgs("mrrn", SAMPLES, None, "tiny", tmp_path / "u",
                         overrides={"steps": 1, "translator": "none", "arch": "unet"}, progress=False))
    folder = tmp_path / "w"
    shutil.copytree(tiny_weights, folder)
    for ext in (".safetensors", ".json"):
        shutil.copy(tmp_path / "u" / f"export{ext}", folder / f"{WEIGHT_NAMES['mrrn']}{ext}")
    pipe = create_pipeline("umf-mrrn+gff", weights_dir=folder)
    assert isinstance(pipe.registrar.net, UNetRegistrar)
    res = fuse_arrays(_texture(70, 90), _texture(70, 90, 3), pipe)
    assert res.field.shape == (2, 70, 90) and np.isfinite(res.fused).all()


def test_pipeline_is_deterministic_on_cpu(tiny_weights):
    pipe = create_pipeline("umf-cmgr", weights_dir=tiny_weights)
    ir, vis = _texture(96, 120), _texture(96, 120, 2)
    a, b = fuse_arrays(ir, vis, pipe), fuse_arrays(ir, vis, pipe)
    assert np.array_equal(a.fused, b.fused) and np.array_equal(a.field, b.field)


def test_missing_weights_error_names_file(tmp_path):
    with pytest.raises(ValueError, match="mrrn_cpu.safetensors: weights file not found|cpstn_cpu"):
        create_pipeline("umf-cmgr", weights_dir=tmp_path)


class _Scrambler(torch.nn.Module):
    """A 'network' that returns a large random field: registration must refuse it."""

    def forward(self, fixed, moving):
        g = torch.Generator().manual_seed(0)
        return {"field": torch.randn(fixed.shape[0], 2, *fixed.shape[-2:], generator=g) * 6}


class _Zero(torch.nn.Module):
    def forward(self, fixed, moving):
        return {"field": torch.zeros(fixed.shape[0], 2, *fixed.shape[-2:])}


def test_global_stage_recovers_known_shift():
    fixed = torch.from_numpy(_texture(120, 160))[None, None]
    shift = torch.zeros(1, 2, 120, 160)
    shift[:, 0], shift[:, 1] = 5.0, -3.0
    moving = warp.warp(fixed, shift)  # moving[y, x] = fixed[y - 3, x + 5]
    res = DeformableRegistrar(_Zero(), global_stage="ecc")(moving, fixed)
    inner = res.field[0, :, 10:-10, 10:-10]
    assert abs(inner[0].mean().item() + 5) < 1 and abs(inner[1].mean().item() - 3) < 1
    d = res.diagnostics[0]
    assert d["ncc_after"] > d["ncc_before"] and not d["suspect"]
    assert {"ncc_before", "ncc_global", "ncc_after", "folding_fraction", "field_mean_px"} <= set(d)


def test_suspect_fallback_to_global_field():
    fixed = torch.from_numpy(_texture(96, 128))[None, None]
    res = DeformableRegistrar(_Scrambler(), global_stage="phase")(fixed.clone(), fixed)
    d = res.diagnostics[0]
    assert d["suspect"] and "global" in d["fallback"]
    assert res.field.abs().max().item() < 0.5  # the random field was rejected
    assert torch.allclose(res.aligned, fixed, atol=1e-3)


def test_suspect_fallback_to_identity_without_global():
    fixed = torch.from_numpy(_texture(96, 128))[None, None]
    res = DeformableRegistrar(_Scrambler(), global_stage=None)(fixed.clone(), fixed)
    d = res.diagnostics[0]
    assert d["suspect"] and d["fallback"]
    assert res.field.abs().max().item() == 0.0


class _WrongGlobal(torch.nn.Module):
    """A global stage that always proposes a 6 px translation, wrong for an aligned pair."""

    def forward(self, moving, fixed):
        from alignfuse.stages import RegistrationResult

        field = torch.zeros(moving.shape[0], 2, *moving.shape[-2:])
        field[:, 0] = 6.0
        return RegistrationResult(warp.warp(moving, field), field, [{} for _ in range(moving.shape[0])])


@pytest.mark.parametrize("margin, start", [(None, "global"), (0.0, "identity")])
def test_global_margin_rejects_a_wrong_global_start_after_the_network(margin, start):
    fixed = torch.from_numpy(_texture(96, 128))[None, None]
    reg = DeformableRegistrar(_Zero(), global_stage="phase", criterion="mind", global_margin=margin,
                              tolerance=1.0)  # tolerance 1: the similarity fallback stays out of the way
    reg._global = _WrongGlobal()
    res = reg(fixed.clone(), fixed)
    assert res.diagnostics[0]["start"] == start
    assert res.field.abs().max().item() == (6.0 if start == "global" else 0.0)


class _Constant(torch.nn.Module):
    """A 'network' that always proposes the same 4 px x-translation."""

    def forward(self, fixed, moving):
        field = torch.zeros(fixed.shape[0], 2, *fixed.shape[-2:])
        field[:, 0] = 4.0
        return {"field": field}


def test_global_margin_keeps_a_right_global_field_the_network_spoils():
    # true shift 6 px, exact global stage, a network that adds 4 px: the global start (with its fallback to the
    # global field) must beat the identity start (which ends 2 px off)
    fixed = torch.from_numpy(_texture(96, 128))[None, None]
    shift = torch.zeros(1, 2, 96, 128)
    shift[:, 0] = -6.0
    moving = warp.warp(fixed, shift)  # registering needs field (+6, 0)
    reg = DeformableRegistrar(_Constant(), global_stage="phase", criterion="mind", global_margin=0.0)
    reg._global = _WrongGlobal()  # proposes exactly (+6, 0) here
    res = reg(moving, fixed)
    d = res.diagnostics[0]
    assert d["start"] == "global" and d["suspect"] and "global" in d["fallback"]
    assert abs(res.field[0, 0, 20:-20, 20:-20].mean().item() - 6.0) < 1e-3


def test_cross_modal_global_stage_and_mind_criterion():
    """Visible-like reference with inverted contrast: the MIND global stage recovers the shift and the MIND
    criterion accepts it (its similarity rises), reported under mind_* keys."""
    fixed = torch.from_numpy(_texture(120, 160))[None, None]
    shift = torch.zeros(1, 2, 120, 160)
    shift[:, 0], shift[:, 1] = 4.0, -2.0
    moving = 1.0 - warp.warp(fixed, shift)  # IR-like: contrast inverted
    res = DeformableRegistrar(_Zero(), global_stage="mind", criterion="mind")(moving, fixed)
    inner = res.field[0, :, 10:-10, 10:-10]
    assert abs(inner[0].mean().item() + 4) < 1 and abs(inner[1].mean().item() - 2) < 1
    d = res.diagnostics[0]
    assert d["mind_after"] > d["mind_before"] and not d["suspect"] and "ncc_after" not in d
    with pytest.raises(ValueError, match="criterion"):
        DeformableRegistrar(_Zero(), criterion="mse")


@pytest.mark.skipif(not weights_available("mrrn"), reason="registration weights not shipped")
@pytest.mark.parametrize("stem", ["FLIR_00211"])
def test_shipped_registration_recovers_shift_on_real_pair(stem):
    """Users never get 'registration does nothing': a (5, -3) px shift is recovered within 1 px by the
    shipped MRRN (MIND global stage + MRRN on the visible luminance). The other samples are documented in
    docs/RESULTS.md §1.7 (FLIR_04593 and FLIR_06282 end 1.3 and 1.6 px off in x)."""
    from alignfuse import io
    from alignfuse.api import register_arrays

    pair = io.load_pair(SAMPLES / "ir" / f"{stem}.jpg", SAMPLES / "vi" / f"{stem}.jpg")
    h, w = pair.ir.shape
    shift = torch.zeros(1, 2, h, w)
    shift[:, 0], shift[:, 1] = 5.0, -3.0
    moving = warp.warp(torch.from_numpy(pair.ir)[None, None], shift)[0, 0].numpy()
    res = register_arrays(moving, pair.vis, create_pipeline("mrrn+gff"))
    inner = res.field[:, 20:-20, 20:-20]
    assert abs(np.median(inner[0]) + 5) < 1 and abs(np.median(inner[1]) - 3) < 1
    assert not res.diagnostics["suspect"]


def test_tiled_fusion_equals_untiled_for_local_network():
    from alignfuse.model_pipelines import NetFuser
    from alignfuse.models.difn import build_difn

    torch.manual_seed(0)
    net = build_difn("cpu")
    ir = torch.rand(1, 1, 150, 230)
    vis = torch.rand(1, 1, 150, 230)
    whole = NetFuser(net, tile=4096)(ir, vis)
    tiles = NetFuser(net, tile=64, overlap=16)(ir, vis)
    assert torch.allclose(whole, tiles, atol=1e-5)
    with pytest.raises(ValueError, match="overlap"):
        NetFuser(net, tile=16, overlap=16)(ir, vis)


def _shifted_sample(name: str, shift: int):
    from alignfuse import io, synth

    pair = io.load_pair(SAMPLES / "ir" / f"{name}.jpg", SAMPLES / "vi" / f"{name}.jpg")
    return synth.synthesise_pair(pair.ir, pair.vis, synth.parse_preset(f"shift:{shift}"), synth.pair_rng(0, name))


def _ssim_mean(s, fused_y: np.ndarray) -> float:
    from alignfuse import io
    from alignfuse.metrics import compute_fusion_metrics

    u8 = lambda a: np.floor(np.clip(a, 0, 1) * 255 + 0.5)  # noqa: E731
    vis_y = io.rgb_to_ycbcr(s.vis)[0]
    return compute_fusion_metrics(u8(vis_y), u8(s.ir_gt), u8(fused_y), names=["SSIM_mean"])["SSIM_mean"]


@pytest.mark.skipif(not weights_available("rfvif"), reason="RFVIF weights not shipped")
def test_shipped_rfvif_ghosts_less_than_averaging_at_5px():
    """Ghosting measure: SSIM_mean of the fused luminance against the VIS and the *aligned* IR."""
    s = _shifted_sample("FLIR_04593", 5)
    rfvif = fuse_arrays(s.ir_warp, s.vis, create_pipeline("rfvif"))
    avg = fuse_arrays(s.ir_warp, s.vis, create_pipeline("identity+average"))
    assert _ssim_mean(s, rfvif.fused_y) > _ssim_mean(s, avg.fused_y) + 0.03


@pytest.mark.skipif(not weights_available("difn"), reason="DIFN weights not shipped")
def test_shipped_difn_fuses_both_sources():
    s = _shifted_sample("FLIR_06282", 0)
    res = fuse_arrays(s.ir_gt, s.vis, create_pipeline("identity+difn"))
    from alignfuse import io
    from alignfuse.metrics import ncc

    vis_y = io.rgb_to_ycbcr(s.vis)[0]
    # the fused image carries both sources: clearly correlated with each of them
    assert ncc(res.fused_y, s.ir_gt) > 0.3 and ncc(res.fused_y, vis_y) > 0.3


class _RecordingRegistrar:
    """Identity registrar that remembers the working size it was given."""

    def __call__(self, moving, fixed):
        from alignfuse.stages import IdentityRegistrar

        self.size = tuple(moving.shape[-2:])
        return IdentityRegistrar()(moving, fixed)


@pytest.mark.parametrize("size, work", [((480, 640), (288, 384)), ((40, 900), (40, 900)), ((100, 1200), (64, 768)),
                                        ((300, 200), (300, 200))])
def test_working_size_shrinks_the_long_side_but_keeps_a_usable_short_side(size, work):
    from alignfuse.baselines import AverageFuser
    from alignfuse.pipeline import Pipeline

    reg = _RecordingRegistrar()
    pipe = Pipeline(registrar=reg, fuser=AverageFuser(), register_long_side=384)
    res, _ = pipe.register(torch.rand(1, 1, *size), torch.rand(1, 1, *size))
    assert reg.size == work and res.field.shape[-2:] == size


class _Shift(torch.nn.Module):
    """A 'network' that always proposes a 3 px shift."""

    def forward(self, fixed, moving):
        field = torch.zeros(fixed.shape[0], 2, *fixed.shape[-2:])
        field[:, 0] = 3.0
        return {"field": field}


@pytest.mark.parametrize("flat_side", ["moving", "fixed"])
def test_constant_image_is_not_registered(flat_side):
    texture = torch.from_numpy(_texture(48, 64))[None, None]
    flat = torch.full_like(texture, 0.4)
    moving, fixed = (flat, texture) if flat_side == "moving" else (texture, flat)
    shift = torch.zeros(1, 2, 48, 64)
    shift[:, 0] = 3.0
    shifted = warp.warp(texture, shift)  # a textured pair the 3 px 'network' registers correctly
    res = DeformableRegistrar(_Shift(), global_stage=None)(torch.cat([moving, texture]), torch.cat([fixed, shifted]))
    d, ok = res.diagnostics
    assert d["suspect"] and "constant" in d["fallback"] and res.field[0].abs().max().item() == 0.0
    assert not ok["suspect"] and res.field[1, 0].mean().item() == pytest.approx(3.0)  # the textured pair is untouched


class _SpyGlobal:
    """A global stage that records what it registered against and proposes nothing."""

    def __call__(self, moving, fixed):
        from alignfuse.stages import IdentityRegistrar

        self.fixed = fixed
        return IdentityRegistrar()(moving, fixed)


def test_global_stage_can_work_on_the_visible_image_while_the_network_sees_the_reference():
    from alignfuse.baselines import AverageFuser
    from alignfuse.pipeline import Pipeline

    class _Translator(torch.nn.Module):  # a 'pseudo-IR' that is clearly not the visible luminance
        def forward(self, vis):
            return 1.0 - vis.mean(1, keepdim=True)

    reg = DeformableRegistrar(_Zero(), global_stage="phase", global_reference="visible")
    spy = reg._global = _SpyGlobal()
    vis = torch.from_numpy(_texture(48, 64))[None, None].expand(1, 3, 48, 64).contiguous()
    ir = torch.from_numpy(_texture(48, 64))[None, None]
    Pipeline(_Translator(), reg, AverageFuser()).register(ir, vis)
    torch.testing.assert_close(spy.fixed, vis[:, :1])  # grey VIS: its luminance, not the translator's output
    with pytest.raises(ValueError, match="visible"):
        reg(ir, ir)
    plain = DeformableRegistrar(_Zero(), global_stage="phase")
    plain._global = _SpyGlobal()
    Pipeline(_Translator(), plain, AverageFuser()).register(ir, vis)
    torch.testing.assert_close(plain._global.fixed, 1.0 - vis[:, :1])
    with pytest.raises(ValueError, match="global_reference"):
        DeformableRegistrar(_Zero(), global_reference="vis")


@pytest.mark.parametrize("shift, used", [(2.0, False), (9.0, True)])
def test_global_min_shift_leaves_small_misalignment_to_the_network(shift, used):
    fixed = torch.from_numpy(_texture(96, 128))[None, None]
    gt = torch.zeros(1, 2, 96, 128)
    gt[:, 0] = shift
    moving = warp.warp(fixed, -gt)  # aligning it back needs the field +shift in x (approximately)
    reg = DeformableRegistrar(_Zero(), global_stage="phase", criterion="mind", global_min_shift=4.0)
    res = reg(moving, fixed)
    d = res.diagnostics[0]
    if used:
        assert d["start"] == "global" and abs(float(res.field[0, 0, 20:-20, 20:-20].mean()) - shift) < 0.5
    else:
        assert d["start"] == "identity (small global)" and res.field.abs().max().item() == 0.0


@pytest.fixture
def tiny_difn(tmp_path) -> tuple[Path, torch.nn.Module]:
    """A folder holding a small random DIFN under the shipped name, and that network."""
    from alignfuse import checkpoints
    from alignfuse.models.difn import build_difn

    torch.manual_seed(7)
    net = build_difn("fast").eval()
    checkpoints.save_weights(net, tmp_path / "run" / WEIGHT_NAMES["difn"], "difn", dict(net.config))
    return tmp_path / "run", net


def _read_u8(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path)).astype(np.int32)


@pytest.mark.skipif(not weights_available("difn"), reason="DIFN weights not shipped")
def test_grid_learned_fuser_reads_the_weights_dir(tiny_difn, tmp_path, capsys):
    """`--model ecc+difn --weights-dir RUN` fuses with RUN's DIFN, not the shipped one, in fuse and evaluate."""
    from alignfuse import io
    from alignfuse.baselines import ECCRegistrar
    from alignfuse.cli import main
    from alignfuse.model_pipelines import NetFuser
    from alignfuse.pipeline import Pipeline

    folder, net = tiny_difn
    loaded = create_pipeline("ecc+difn", weights_dir=folder).fuser.net.state_dict()
    assert loaded.keys() == net.state_dict().keys() and all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())
    ir, vis = SAMPLES / "ir/TNO_07.png", SAMPLES / "vi/TNO_07.png"
    common = ["fuse", str(ir), str(vis), "--model", "ecc+difn"]
    assert main([*common, "-o", str(tmp_path / "mine.png"), "--weights-dir", str(folder)]) == 0
    assert main([*common, "-o", str(tmp_path / "shipped.png")]) == 0
    assert "weights" not in capsys.readouterr().err  # used, so no warning
    pair = io.load_pair(ir, vis)
    expected = fuse_arrays(pair.ir, pair.vis, Pipeline(registrar=ECCRegistrar(), fuser=NetFuser(net)))
    mine = _read_u8(tmp_path / "mine.png")
    np.testing.assert_array_equal(mine, np.floor(np.clip(expected.fused, 0, 1) * 255 + 0.5))
    assert np.abs(mine - _read_u8(tmp_path / "shipped.png")).mean() > 1.0

    summaries = []
    for extra in (["--weights-dir", str(folder)], []):
        out = tmp_path / f"e{len(extra)}.json"
        assert main(["evaluate", "--data", str(SAMPLES), "--limit", "1", "--model", "ecc+difn", "-q",
                     "--json", str(out), *extra]) == 0
        summaries.append(json.loads(out.read_text())["summary"]["ecc+difn"])
    assert summaries[0]["EPE_mean"] == summaries[1]["EPE_mean"]  # same registration
    assert summaries[0]["SSIM_mean"]["mean"] != summaries[1]["SSIM_mean"]["mean"]  # another fuser


def test_weights_dir_unused_by_the_pipeline_is_a_one_line_warning(tmp_path, capsys):
    from alignfuse.api import load_pipeline
    from alignfuse.cli import main

    with pytest.warns(UserWarning, match="ecc\\+gff reads no network weights.*ignored"):
        load_pipeline("ecc+gff", weights_dir=tmp_path)
    code = main(["evaluate", "--data", str(SAMPLES), "--limit", "1", "--model", "ecc+gff", "-q",
                 "--weights-dir", str(tmp_path)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "weights" in ln]
    assert code == 0 and len(lines) == 1 and lines[0].startswith("alignfuse: warning: ecc+gff reads no network")
    assert str(tmp_path) in lines[0] and "warnings.warn" not in err


def test_registry_does_not_import_the_model_pipelines_at_load_but_registers_them_on_lookup():
    """model_pipelines registers into the registry; the registry (and the stages it uses) must not import it back
    when they load (an import cycle). The registry loads it on its first lookup instead (a deferred import, so that
    ``import alignfuse`` loads no torch), and a lookup through the registry alone finds the network pipelines."""
    import ast
    import subprocess
    import sys

    import alignfuse

    src = Path(alignfuse.__file__).parent
    for module in ("registry.py", "learned_stages.py"):
        tree = ast.parse((src / module).read_text())
        top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        top += [n for b in tree.body if isinstance(b, ast.If) for n in b.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        imported = {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in top for a in n.names}
        assert not any("model_pipelines" in name for name in imported), module
    code = ("import sys; from alignfuse.registry import create_pipeline, list_pipelines; "
            "print('alignfuse.model_pipelines' in sys.modules, 'rfvif' in list_pipelines(classical=False), "
            "type(create_pipeline('umf-cmgr')).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "True", "Pipeline"]

def test_the_default_registers_at_its_working_size_except_with_a_rig():
    # (what a working size does to the reported matrices: tests/test_pipeline.py)
    from alignfuse.model_pipelines import DEFAULT_REGISTER_LONG_SIDE
    from alignfuse.registration.rig import RigModel

    for name in ("default", "default+gff", "default+pwf"):
        assert create_pipeline(name).register_long_side == DEFAULT_REGISTER_LONG_SIDE
    rig = RigModel(np.array([[0.9, 0.0, 12.0], [0.0, 0.9, 8.0], [0.0, 0.0, 1.0]]), (64, 48), (64, 48), "homography",
                   {"frames": 3, "agreed": 3}, {"corner_rms": 0.1}, "ok", "fine")
    assert create_pipeline("default", rig=rig).register_long_side is None  # calibrated at the frames' own size
