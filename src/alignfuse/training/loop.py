"""Resumable, seeded training loop shared by every model (CPSTN, MRRN, DIFN, RFVIF).

What it guarantees:

* **Atomic checkpoints**: ``OUT/checkpoint.pt`` is written to a temporary file and renamed, so a
  SIGKILL at any moment leaves the previous checkpoint intact and loses at most one interval.
* **Exact resumption**: batch sampling draws from ``numpy.random.default_rng([seed, step, rank])``,
  so step ``k`` sees the same batch whether or not the run was interrupted before it; the
  torch RNG state is checkpointed too.
* **Logs**: one JSON object per logged step in ``OUT/log.jsonl`` (and ``log.csv``), appended; on
  resume, lines after the checkpointed step are dropped so the log matches the weights.
* **DDP**: under ``torchrun`` (``WORLD_SIZE`` > 1) the process group is initialised (gloo on CPU,
  nccl on CUDA), every module in ``trainable`` is wrapped in DistributedDataParallel, each rank
  draws its own batches, and only rank 0 writes checkpoints and logs.

A recipe provides ``modules``, ``optimizers`` and a ``step_fn(batch_rng, step) -> {loss name: float}``
that samples its own batch from the generator and performs the optimiser updates.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserError

__all__ = ["LoopConfig", "TrainLoop", "DistInfo", "setup_distributed", "atomic_torch_save", "compact_checkpoint"]


@dataclass
class LoopConfig:
    steps: int
    seed: int = 0
    checkpoint_every: int = 50
    log_every: int = 10
    lr_milestones: tuple[float, ...] = ()  # fractions of `steps` where every lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    linear_decay_from: float | None = None  # fraction of `steps` after which lr falls linearly to 0 (CycleGAN)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "cpu") -> DistInfo:
    """Initialise torch.distributed when launched by torchrun; no-op for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = torch.device(device)
    if world <= 1:
        return DistInfo(0, 1, dev)
    rank = int(os.environ["RANK"])
    if dev.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, dev)


def compact_checkpoint(src: Path | str, dst: Path | str) -> tuple[int, int]:
    """Copy a run's checkpoint with the optimisers' floating-point state (Adam moments) stored in bfloat16, to carry
    a run between sessions in the repository at about half the size; -> (bytes before, bytes after).

    Resuming from the copy is an ordinary ``--resume``: ``Optimizer.load_state_dict`` casts the state back to the
    parameters' float32. The networks' weights, the step and the RNG state are kept exactly; only the moments
    lose precision (relative 4e-3), so a resumed run is close to, not identical with, an uninterrupted one."""
    before = Path(src).stat().st_size  # read first: src may be dst
    state = torch.load(src, map_location="cpu", weights_only=True)
    for opt in state.get("optimizers", {}).values():
        for per_param in opt.get("state", {}).values():
            for key, value in per_param.items():
                if isinstance(value, torch.Tensor) and value.is_floating_point() and value.ndim > 0:
                    per_param[key] = value.to(torch.bfloat16)
    atomic_torch_save(state, Path(dst))
    return before, Path(dst).stat().st_size


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to ``path.tmp`` then rename (POSIX-atomic on one filesystem)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


# run settings a resumption may not change: they define what is trained on and what is trained
RESUME_FIXED = ("data", "split", "net", "variant", "objective")


class TrainLoop:
    """Run ``step_fn`` for ``config.steps`` steps with checkpoints, logs, progress bar and resume.

    Args:
        out_dir: run directory (outside the repository), holds checkpoint.pt, log.jsonl, log.csv, config.json.
        modules: name -> module; all are checkpointed.
        optimizers: name -> optimizer; checkpointed, and their lr follows ``lr_milestones``.
        step_fn: ``(rng, step) -> {loss name: float}``; samples a batch with ``rng`` and updates weights.
        config: loop settings; ``run_config`` (any JSON) is saved next to the checkpoint for the record.
    """

    def __init__(
        self,
        out_dir: Path,
        modules: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        step_fn: Callable[[np.random.Generator, int], dict[str, float]],
        config: LoopConfig,
        run_config: dict[str, Any] | None = None,
        dist_info: DistInfo | None = None,
        progress: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.modules = modules
        self.optimizers = optimizers
        self.step_fn = step_fn
        self.config = config
        self.run_config = run_config or {}
        self.dist = dist_info or DistInfo()
        self.progress = progress
        self.step = 0
        self.elapsed = 0.0
        self._base_lrs = {k: [g["lr"] for g in o.param_groups] for k, o in optimizers.items()}

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    # ----------------------------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            "modules": {k: _unwrap(m).state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "torch_rng": torch.get_rng_state(),
            "loop_config": asdict(self.config),
        }

    def save(self) -> None:
        if self.dist.is_main:
            atomic_torch_save(self.state_dict(), self.checkpoint_path)

    def load(self, path: Path | None = None) -> bool:
        """Restore from ``path`` (default the run's checkpoint). Returns False when there is none."""
        path = path or self.checkpoint_path
        if not path.exists():
            return False
        state = torch.load(path, map_location=self.dist.device, weights_only=True)
        try:
            for k, m in self.modules.items():
                _unwrap(m).load_state_dict(state["modules"][k])
            for k, o in self.optimizers.items():
                o.load_state_dict(state["optimizers"][k])
        except (KeyError, RuntimeError, ValueError) as exc:  # another recipe's or configuration's run
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{path}: this checkpoint does not fit the network being trained ({first[:160]}); resume "
                            "with the recipe and --config the run was started with, or choose another --out") from None
        torch.set_rng_state(state["torch_rng"].cpu())
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self._truncate_logs()
        return True

    def _check_resumable(self) -> dict[str, Any]:
        """On ``--resume``: refuse a run whose data, split or network differ from the recorded ones (two trainings
        in one record) -> the record (empty for an older run without one)."""
        try:
            previous = json.loads((self.out_dir / "config.json").read_text())
        except (OSError, ValueError):
            return {}
        old, new = previous.get("run", {}), json.loads(json.dumps(self.run_config, default=str))
        for key in RESUME_FIXED:
            if key in old and key in new and old[key] != new[key]:
                raise UserError(f"--resume {self.out_dir}: the run was trained with {key} {old[key]!r}, not "
                                f"{new[key]!r}; resume with the same {key}, or start a new run (--out)")
        return previous

    def _resumption_history(self, previous: dict[str, Any]) -> list[dict[str, Any]]:
        """The record's resumptions plus this one's changed settings, at the step it resumed from."""
        if not previous:
            return []
        old, new = previous.get("run", {}), json.loads(json.dumps(self.run_config, default=str))
        changed = {k: [old.get(k), v] for k, v in new.items() if k in old and old[k] != v}
        history = list(previous.get("resumed", []))
        if changed:
            history.append({"at_step": self.step, "changed": changed})
        return history

    def _truncate_logs(self) -> None:
        """Drop log lines newer than the restored step (they belong to lost work)."""
        log = self.out_dir / "log.jsonl"
        if not (self.dist.is_main and log.exists()):
            return
        keep = [ln for ln in log.read_text().splitlines() if ln and json.loads(ln)["step"] <= self.step]
        log.write_text("".join(ln + "\n" for ln in keep))
        self._rewrite_csv([json.loads(ln) for ln in keep])

    def _rewrite_csv(self, rows: list[dict]) -> None:
        path = self.out_dir / "log.csv"
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("step", "elapsed_s"), k))
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    def _log(self, row: dict[str, float]) -> None:
        if not self.dist.is_main:
            return
        with open(self.out_dir / "log.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        rows = [json.loads(ln) for ln in (self.out_dir / "log.jsonl").read_text().splitlines() if ln]
        self._rewrite_csv(rows)

    # ---------------------------------------------------------------------------------- training
    def _set_lr(self) -> None:
        n_drops = sum(self.step >= int(f * self.config.steps) for f in self.config.lr_milestones)
        factor = self.config.lr_gamma**n_drops
        if self.config.linear_decay_from is not None:
            start = self.config.linear_decay_from * self.config.steps
            factor *= 1.0 - max(0.0, self.step - start) / (self.config.steps - start + 1)
        for k, opt in self.optimizers.items():
            for group, base in zip(opt.param_groups, self._base_lrs[k]):
                group["lr"] = base * factor

    def run(self, resume: bool = False) -> dict[str, float]:
        """Train until ``config.steps``; returns the last logged losses."""
        from tqdm import tqdm

        previous = self._check_resumable() if resume else {}
        if resume:
            self.load()
        elif self.checkpoint_path.exists():
            raise FileExistsError(f"{self.checkpoint_path} exists; pass --resume to continue or choose another --out")
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            record = {"loop": asdict(self.config), "run": self.run_config, "world_size": self.dist.world_size}
            history = self._resumption_history(previous)
            if history:  # what each resumption changed, so the record tells the whole run
                record["resumed"] = history
            (self.out_dir / "config.json").write_text(json.dumps(record, indent=1, default=str))
        for m in self.modules.values():
            m.train()
        last: dict[str, float] = {}
        bar = tqdm(total=self.config.steps, initial=self.step, desc=self.out_dir.name, unit="step",
                   disable=not (self.progress and self.dist.is_main), dynamic_ncols=True)
        t_start = time.perf_counter() - self.elapsed
        while self.step < self.config.steps:
            self._set_lr()
            rng = np.random.default_rng([self.config.seed, self.step, self.dist.rank])
            losses = self.step_fn(rng, self.step)
            self.step += 1
            self.elapsed = time.perf_counter() - t_start
            bar.update(1)
            if self.step % self.config.log_every == 0 or self.step == self.config.steps:
                last = {"step": self.step, "elapsed_s": round(self.elapsed, 2), **losses}
                self._log(last)
                bar.set_postfix({k: f"{v:.4g}" for k, v in losses.items()})
            if self.step % self.config.checkpoint_every == 0 or self.step == self.config.steps:
                self.save()
        bar.close()
        return last
