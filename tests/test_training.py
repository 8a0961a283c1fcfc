"""Training loop: determinism, resume after SIGKILL, checkpoint round trip, DDP with 2 CPU processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from alignfuse import checkpoints
from alignfuse.models.cpstn import build_cpstn
from alignfuse.training.recipes import TrainArgs, run_recipe

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def _train_cmd(out: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "alignfuse.cli", "train", "rfvif", "--data", str(SAMPLES), "--config", "tiny",
            "--out", str(out), "--steps", str(steps), "--threads", "1", "-q", *extra]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoint.pt", weights_only=True)["modules"]["net"]


def test_same_seed_same_weights(tmp_path):
    for name in ("a", "b"):
        run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / name, progress=False))
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    steps = 8
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(ref, steps, "--set", "checkpoint_every=2"), check=True, cwd=ROOT)

    out = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(out, steps, "--set", "checkpoint_every=2"), cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline:
        ckpt = out / "checkpoint.pt"
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["step"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(out / "checkpoint.pt", weights_only=True)  # never truncated
    assert 2 <= state["step"] <= steps
    (out / "checkpoint.pt.tmp").write_bytes(b"half a checkpoint")  # what a kill during a save leaves
    subprocess.run(_train_cmd(out, steps, "--set", "checkpoint_every=2", "--resume"), check=True, cwd=ROOT)
    # the stale .tmp was never read (the weights below match) and the resumed run's saves replaced it
    assert not list(out.glob("*.tmp"))
    wr, wk = _weights(ref), _weights(out)
    assert all(torch.allclose(wr[k], wk[k], atol=1e-6) for k in wr)
    logged = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged)) and logged[-1] == steps  # no duplicated steps after resume


def test_compact_checkpoint_keeps_weights_and_resumes(tmp_path):
    """The copy carried between sessions: half the optimiser bytes, the same weights and step, and --resume runs."""
    import shutil

    from alignfuse.training.loop import compact_checkpoint

    run = tmp_path / "run"
    run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", run, overrides={"steps": 2}, progress=False))
    carried = tmp_path / "carried"
    shutil.copytree(run, carried)
    before, after = compact_checkpoint(run / "checkpoint.pt", carried / "checkpoint.pt")
    assert after < before
    full = torch.load(run / "checkpoint.pt", weights_only=True)
    small = torch.load(carried / "checkpoint.pt", weights_only=True)
    assert small["step"] == full["step"] == 2
    assert all(torch.equal(full["modules"]["net"][k], small["modules"]["net"][k]) for k in full["modules"]["net"])
    moments = [v for o in small["optimizers"].values() for st in o["state"].values() for v in st.values()
               if isinstance(v, torch.Tensor) and v.ndim > 0]
    assert moments and all(v.dtype == torch.bfloat16 for v in moments)
    run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", carried, overrides={"steps": 3}, resume=True, progress=False))
    assert torch.load(carried / "checkpoint.pt", weights_only=True)["step"] == 3


def test_refuses_to_overwrite_without_resume(tmp_path):
    run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / "r", overrides={"steps": 1}, progress=False))
    with pytest.raises(FileExistsError, match="--resume"):
        run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / "r", overrides={"steps": 2}, progress=False))


def test_a_split_name_without_a_pair_is_named_not_silently_left_out_of_training(tmp_path):
    from alignfuse.errors import AlignfuseWarning
    from alignfuse.training.data import load_bank

    split = tmp_path / "names.txt"
    split.write_text("TNO_07\nNOPE_1\n")
    with pytest.warns(AlignfuseWarning, match="NOPE_1"):
        bank = load_bank(SAMPLES, split)
    assert bank.names == ["TNO_07"]


def test_resume_refuses_other_data_or_another_network_and_records_what_it_changed(tmp_path):
    from alignfuse.errors import UserError

    run = tmp_path / "r"
    run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", run, overrides={"steps": 2}, progress=False))
    split = tmp_path / "one.txt"
    split.write_text("TNO_07\n")
    with pytest.raises(UserError, match="split"):  # steps 1-2 on every sample pair, the rest on one: two trainings
        run_recipe(TrainArgs("rfvif", SAMPLES, split, "tiny", run, overrides={"steps": 3}, resume=True,
                             progress=False))
    with pytest.raises(UserError, match="does not fit the network"):  # another recipe's checkpoint: no traceback
        run_recipe(TrainArgs("difn", SAMPLES, None, "tiny", run, overrides={"steps": 3}, resume=True, progress=False))
    run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", run, overrides={"steps": 3, "lr": 5e-4}, resume=True,
                         progress=False))
    record = json.loads((run / "config.json").read_text())
    assert record["run"]["lr"] == 5e-4
    assert record["resumed"] == [{"at_step": 2, "changed": {"lr": [1e-3, 5e-4], "steps": [2, 3]}}]


def test_export_round_trip(tmp_path):
    from alignfuse.models.rfvif import RFVIF, RFVIFConfig

    run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / "r", overrides={"steps": 2}, progress=False))
    state, meta = checkpoints.load_weights(tmp_path / "r" / "export", architecture="rfvif")
    net = RFVIF(RFVIFConfig.from_dict(meta["config"]))
    net.load_state_dict(state)
    assert meta["training"]["steps_done"] == 2
    with pytest.raises(checkpoints.WeightsError, match="expected 'mrrn'"):
        checkpoints.load_weights(tmp_path / "r" / "export", architecture="mrrn")


def test_ddp_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "alignfuse.cli", "train", "rfvif", "--data", str(SAMPLES), "--config", "tiny", "--out", str(out),
           "--steps", "3", "-q"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3


def test_rfvif_variant_overrides_and_rejects_unknown_keys():
    from alignfuse.training.recipes import rfvif_variant

    cfg = rfvif_variant("fast", "use_dkg=false, num_fab=1, msrb_blocks=1/0/2, lfr_temperature=0.5")
    assert (cfg.use_dkg, cfg.num_fab, cfg.msrb_blocks, cfg.lfr_temperature) == (False, 1, (1, 0, 2), 0.5)
    assert cfg.width == 16 and cfg.use_lfr_ir  # untouched fields keep the base config
    with pytest.raises(ValueError, match="KEY=VALUE"):
        rfvif_variant("fast", "use_dkgg=false")
    with pytest.raises(ValueError, match="true/false"):
        rfvif_variant("fast", "use_dkg=maybe")


def test_rfvif_ablation_run_exports_its_variant(tmp_path):
    run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / "r",
                         overrides={"steps": 1, "variant": "use_lfr_vis=false,use_lfr_ir=false"}, progress=False))
    _, meta = checkpoints.load_weights(tmp_path / "r" / "export", architecture="rfvif")
    assert meta["config"]["use_lfr_vis"] is False and meta["config"]["use_lfr_ir"] is False


def test_mrrn_flow_supervision_logs_epe_and_unet_arch_exports(tmp_path):
    run_recipe(TrainArgs("mrrn", SAMPLES, None, "tiny", tmp_path / "m", overrides={
        "steps": 2, "translator": "none", "target": "ir_gt", "flow_weight": 1.0}, progress=False))
    rows = [json.loads(line) for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    assert all(r["epe"] > 0 and r["total"] >= r["sim_fwd"] for r in rows)
    run_recipe(TrainArgs("mrrn", SAMPLES, None, "tiny", tmp_path / "u", overrides={
        "steps": 1, "translator": "none", "arch": "unet"}, progress=False))
    _, meta = checkpoints.load_weights(tmp_path / "u" / "export", architecture="unet")
    assert meta["training"]["arch"] == "unet"
    with pytest.raises(ValueError, match="target"):
        run_recipe(TrainArgs("mrrn", SAMPLES, None, "tiny", tmp_path / "x",
                             overrides={"translator": "none", "target": "gt"}, progress=False))


def test_resize_bank_shrinks_to_the_working_resolution(tmp_path):
    import numpy as np

    from alignfuse.training.data import load_bank, resize_bank

    bank = load_bank(SAMPLES)
    small = resize_bank(bank, 64)
    for i in range(len(bank)):
        h, w = bank.ir[i].shape
        assert max(small.ir[i].shape) == 64 and small.vis[i].shape[:2] == small.ir[i].shape == small.vis_y[i].shape
        assert abs(small.ir[i].shape[0] / small.ir[i].shape[1] - h / w) < 0.05
        assert small.vis[i].ndim == 3 and 0 <= small.ir[i].min() and small.ir[i].max() <= 1
        # antialiased: the mean grey level survives the 10x reduction
        assert abs(float(small.ir[i].mean()) - float(bank.ir[i].mean())) < 0.01
    assert resize_bank(bank, 10_000).ir[0] is bank.ir[0]  # never enlarged
    run_recipe(TrainArgs("mrrn", SAMPLES, None, "tiny", tmp_path / "m", overrides={
        "steps": 1, "translator": "none", "long_side": 64}, progress=False))
    _, meta = checkpoints.load_weights(tmp_path / "m" / "export", architecture="mrrn")
    assert meta["training"]["long_side"] == 64
    assert np.isfinite(json.loads((tmp_path / "m" / "log.jsonl").read_text().splitlines()[-1])["total"])


def test_shifted_crops_teacher_follows_the_visible_crop_and_flip():
    import numpy as np

    from alignfuse.training.data import load_bank, shifted_crops

    bank = load_bank(SAMPLES)
    teacher = [v.copy() for v in bank.vis_y]  # a teacher equal to the VIS must crop exactly like the VIS
    for seed in range(4):
        b = shifted_crops(bank, np.random.default_rng(seed), 3, 32, 4, teacher=teacher)
        assert b.teacher is not None and torch.equal(b.teacher, b.vis)
    assert shifted_crops(bank, np.random.default_rng(0), 2, 32, 4).teacher is None
    with pytest.raises(ValueError, match="teacher has"):
        shifted_crops(bank, np.random.default_rng(0), 2, 32, 4, teacher=teacher[:1])


def test_rfvif_teacher_and_warm_start(tmp_path):
    run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / "a", overrides={"steps": 1}, progress=False))
    run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / "b", overrides={
        "steps": 2, "teacher": "identity+average", "teacher_weight": 1.0, "init": str(tmp_path / "a" / "export")},
        progress=False))
    rows = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert all(r["teacher"] > 0 for r in rows)
    # init really loads: with lr 0 the warm-started export keeps the parameters it started from (batch-norm
    # running statistics still move in one training step)
    run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / "e", overrides={
        "steps": 1, "lr": 0.0, "init": str(tmp_path / "a" / "export")}, progress=False))
    start, _ = checkpoints.load_weights(tmp_path / "a" / "export", architecture="rfvif")
    after, _ = checkpoints.load_weights(tmp_path / "e" / "export", architecture="rfvif")
    params = [k for k in start if "running_" not in k and "num_batches_tracked" not in k]
    assert len(params) > 100 and all(torch.equal(start[k], after[k]) for k in params)
    with pytest.raises(ValueError, match="teacher=PIPELINE"):
        run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / "c",
                             overrides={"teacher_weight": 1.0}, progress=False))
    with pytest.raises(ValueError, match="holds config"):
        run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / "d",
                             overrides={"net": "fast", "init": str(tmp_path / "a" / "export")}, progress=False))


def _grown_on_skip_export(tmp_path, option: str, steps: int) -> tuple[dict, dict]:
    """Train a `vis_skip` net for one step (run ``a``), then warm-start a net with ``option`` on from its export
    for ``steps`` steps at lr 0 (run ``b``); the parameters both nets have are unchanged. -> (grown state, meta)."""
    run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / "a", overrides={
        "steps": 1, "variant": "vis_skip=true"}, progress=False))
    run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / "b", overrides={
        "steps": steps, "lr": 0.0, "variant": f"vis_skip=true,{option}=true", "init": str(tmp_path / "a" / "export")},
        progress=False))
    start, _ = checkpoints.load_weights(tmp_path / "a" / "export", architecture="rfvif")
    grown, meta = checkpoints.load_weights(tmp_path / "b" / "export", architecture="rfvif")
    params = [k for k in start if "running_" not in k and "num_batches_tracked" not in k]
    assert all(torch.equal(start[k], grown[k]) for k in params)
    return grown, meta


def test_rfvif_grows_the_full_resolution_ir_path_on_skip_weights(tmp_path):
    """An export without the IR path warm-starts a net with it (the path's parameters start fresh); the reverse
    is refused."""
    skip = {"steps": 1, "variant": "vis_skip=true"}
    grown, meta = _grown_on_skip_export(tmp_path, "ir_skip", steps=1)
    assert meta["config"]["ir_skip"] and any(k.startswith("ir_path.") for k in grown)
    with pytest.raises(ValueError, match="holds config"):
        run_recipe(TrainArgs("rfvif", SAMPLES, None, "tiny", tmp_path / "c", overrides={
            **skip, "init": str(tmp_path / "b" / "export")}, progress=False))


def test_rfvif_grows_the_shift_prior_on_skip_weights(tmp_path):
    """An export without the shift prior warm-starts a net with it; the run ramps the estimate's gain in and logs
    the estimate's error against the known shifts."""
    grown, meta = _grown_on_skip_export(tmp_path, "shift_prior", steps=2)
    assert meta["config"]["shift_prior"] and any(k.startswith("shift.") for k in grown)
    assert float(grown["shift.gain"]) == 1.0  # ramped in (shift_ramp 1 by default)
    rows = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert all(r["shift_px"] >= 0 for r in rows) and any(r["shift_px"] > 0 for r in rows)


def test_misaligned_crops_zero_fraction_leaves_pairs_aligned():
    import numpy as np

    from alignfuse.training.data import load_bank, misaligned_crops

    bank = load_bank(SAMPLES)
    b = misaligned_crops(bank, np.random.default_rng(0), 3, 48, "umf", zero_fraction=1.0)
    assert torch.equal(b["moving"], b["ir_gt"]) and float(b["field_gt"].abs().max()) == 0.0
    d = misaligned_crops(bank, np.random.default_rng(0), 3, 48, "umf")
    assert float(d["field_gt"].abs().max()) > 0.1 and not torch.equal(d["moving"], d["ir_gt"])


def test_misaligned_crops_draws_one_preset_alternative_per_sample():
    import numpy as np

    from alignfuse.training.data import load_bank, misaligned_crops

    bank = load_bank(SAMPLES)
    b = misaligned_crops(bank, np.random.default_rng(3), 12, 48, "none | custom:tx=6")
    moved = b["field_gt"].abs().amax(dim=(1, 2, 3))
    # "none" samples keep the IR where it was; "tx=6" ones move it by up to 6 px
    assert (moved == 0).any() and (moved > 0.5).any()
    assert float(moved.max()) <= 6.5
    with pytest.raises(ValueError):
        misaligned_crops(bank, np.random.default_rng(3), 2, 48, "umf|nonsense")


def test_seed_is_an_option_and_recorded_in_the_export(tmp_path):
    from alignfuse.cli import main

    def train(name: str, *seed: str) -> dict[str, torch.Tensor]:
        argv = ["train", "difn", "--data", str(SAMPLES), "--config", "tiny", "--out", str(tmp_path / name),
                "--steps", "1", "-q", *seed]
        assert main(argv) == 0
        state, meta = checkpoints.load_weights(tmp_path / name / "export", architecture="difn")
        assert meta["training"]["seed"] == (int(seed[1]) if seed else 0)
        return state

    default, three, again = train("s0"), train("s3", "--seed", "3"), train("s3b", "--seed", "3")
    assert all(torch.equal(three[k], again[k]) for k in three)
    assert not all(torch.equal(three[k], default[k]) for k in three)


def _recipe_cases() -> list[tuple[str, str]]:
    from alignfuse.training.recipes import RECIPES

    return [(model, config) for model, table in RECIPES.items() for config in table]


@pytest.mark.parametrize("model, config", _recipe_cases())
def test_every_recipe_builds_and_runs_its_first_step(tmp_path, model, config):
    """Every named configuration works as shipped (the paper MRRN once held translator=""), on one small pair
    with one small batch: only the batch size and crop are shrunk."""
    split = tmp_path / "one.txt"
    split.write_text("TNO_07\n")  # 256 x 256
    overrides = {"steps": 1, "batch": 2, "crop": 64, "checkpoint_every": 1, "log_every": 1}
    last = run_recipe(TrainArgs(model, SAMPLES, split, config, tmp_path / "run", overrides=overrides, progress=False))
    assert last["step"] == 1 and all(np.isfinite(v) for v in last.values())
    _, meta = checkpoints.load_weights(tmp_path / "run" / "export")
    assert meta["training"]["seed"] == 0 and meta["training"]["steps_done"] == 1


def test_cpstn_supervised_objective_trains_g_a_alone_from_its_init(tmp_path):
    """objective=supervised: G_A starts from the init run's G_A and is the only network that changes; the loss it
    logs is the paired one. An unknown objective is a user error."""
    from alignfuse.errors import UserError

    split = tmp_path / "one.txt"
    split.write_text("TNO_07\n")
    small = {"steps": 1, "batch": 1, "crop": 64, "checkpoint_every": 1, "log_every": 1}
    run_recipe(TrainArgs("cpstn", SAMPLES, split, "tiny", tmp_path / "init", overrides=small, progress=False))
    init = torch.load(tmp_path / "init" / "checkpoint.pt", weights_only=False)["modules"]["nets"]
    last = run_recipe(TrainArgs("cpstn", SAMPLES, split, "tiny", tmp_path / "sup", progress=False,
                                overrides={**small, "steps": 2, "objective": "supervised", "edge_weight": 8.0,
                                           "init": str(tmp_path / "init" / "checkpoint.pt")}))
    assert set(last) >= {"paired_l1", "edge", "total"} and "gan_a" not in last
    nets = torch.load(tmp_path / "sup" / "checkpoint.pt", weights_only=False)["modules"]["nets"]
    fresh = build_cpstn("tiny", generator=torch.Generator().manual_seed(0)).state_dict()
    changed = {k.split(".")[0] for k in nets if not torch.equal(nets[k], fresh[k] if not k.startswith("g_a.") else init[k])}
    assert changed == {"g_a"}
    with pytest.raises(UserError, match="objective"):
        run_recipe(TrainArgs("cpstn", SAMPLES, split, "tiny", tmp_path / "bad", progress=False,
                             overrides={**small, "objective": "cycle"}))


def test_cpstn_mind_and_nyquist_terms_join_the_supervised_loss(tmp_path):
    """mind_weight adds the MIND-descriptor distance to the real IR (logged as `mind`, in the total), nyquist_weight
    the period-2 texture beyond the real IR's (`nyquist`); both belong to the supervised objective only."""
    from alignfuse.errors import UserError

    split = tmp_path / "one.txt"
    split.write_text("TNO_07\n")
    small = {"steps": 1, "batch": 1, "crop": 64, "checkpoint_every": 1, "log_every": 1, "objective": "supervised",
             "edge_weight": 0.0, "paired_l1": 1.0}
    plain = run_recipe(TrainArgs("cpstn", SAMPLES, split, "tiny", tmp_path / "a", overrides=small, progress=False))
    mind = run_recipe(TrainArgs("cpstn", SAMPLES, split, "tiny", tmp_path / "b", progress=False,
                                overrides={**small, "mind_weight": 10.0}))
    assert "mind" not in plain and 0.0 < mind["mind"] < 1.0
    assert mind["total"] == pytest.approx(mind["paired_l1"] + 10.0 * mind["mind"], rel=1e-5)
    with pytest.raises(UserError, match="mind_weight"):
        run_recipe(TrainArgs("cpstn", SAMPLES, split, "tiny", tmp_path / "c", progress=False,
                             overrides={**small, "objective": "paper", "mind_weight": 1.0}))
    nyq = run_recipe(TrainArgs("cpstn", SAMPLES, split, "tiny", tmp_path / "d", progress=False,
                               overrides={**small, "nyquist_weight": 50.0}))
    assert nyq["nyquist"] >= 0.0
    assert nyq["total"] == pytest.approx(nyq["paired_l1"] + 50.0 * nyq["nyquist"], rel=1e-5)
    with pytest.raises(UserError, match="nyquist_weight"):
        run_recipe(TrainArgs("cpstn", SAMPLES, split, "tiny", tmp_path / "e", progress=False,
                             overrides={**small, "objective": "paper", "nyquist_weight": 1.0}))
