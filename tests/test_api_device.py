"""The API puts inputs on the device of the pipeline's own stages (no CUDA here: the 'meta' device stands in)."""

from __future__ import annotations

import numpy as np
import torch

from alignfuse.api import fuse_arrays, load_pipeline, register_arrays
from alignfuse.baselines import AverageFuser, PhaseCorrelationRegistrar
from alignfuse.learned_stages import NetFuser
from alignfuse.pipeline import Pipeline, PipelineOutput
from alignfuse.stages import IdentityRegistrar, RegistrationResult


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 1, 1)

    def forward(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([ir, vis], 1))


def test_device_of_a_composed_pipeline_is_that_of_its_networks():
    """README's 'compose your own': Pipeline(...).to(device) must get its inputs on that device."""
    assert (Pipeline(registrar=PhaseCorrelationRegistrar(), fuser=AverageFuser())).device.type == "cpu"
    pipe = Pipeline(registrar=PhaseCorrelationRegistrar(), fuser=NetFuser(_Tiny()))
    assert (pipe).device.type == "cpu"
    assert (pipe.to("meta")).device.type == "meta"
    assert (load_pipeline("identity+average", device="meta")).device.type == "meta"  # no networks


class _RecordingPipeline(Pipeline):
    """A pipeline whose fuser is on 'meta' and which records the device of the inputs it is given."""

    def __init__(self) -> None:
        super().__init__(registrar=IdentityRegistrar(), fuser=NetFuser(_Tiny()).to("meta"))

    def _record(self, ir: torch.Tensor) -> torch.Tensor:
        self.seen = ir.device
        return torch.zeros(1, 1, *ir.shape[-2:])

    def __call__(self, ir, vis, ir_size=None):
        z = self._record(ir)
        return PipelineOutput(z, z, torch.zeros(1, 2, *ir.shape[-2:]), z, [{}])

    def register(self, ir, vis, ir_size=None):
        z = self._record(ir)
        return RegistrationResult(z, torch.zeros(1, 2, *ir.shape[-2:]), [{}]), z


def test_fuse_and_register_arrays_send_inputs_to_the_pipelines_device():
    pipe = _RecordingPipeline()
    ir = np.random.default_rng(0).random((16, 20), dtype=np.float32)
    fuse_arrays(ir, ir, pipe)
    assert pipe.seen.type == "meta"  # was CPU: only a `device` attribute patched on by load_pipeline counted
    del pipe.seen
    register_arrays(ir, ir, pipe)
    assert pipe.seen.type == "meta"
