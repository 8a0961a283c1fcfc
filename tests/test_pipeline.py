"""Pipeline-level behaviour: the working size of registration, and a constant infrared image."""

from __future__ import annotations

import numpy as np
import torch

from alignfuse import warp
from alignfuse.api import register_arrays
from alignfuse.baselines.fusion import AverageFuser
from alignfuse.pipeline import Pipeline
from alignfuse.stages import RegistrationResult


class _KnownHomography:
    """A registrar that answers a fixed sampling matrix, given in pixels of the *full-size* frame of ``full``
    (h, w): at any working size it reports and applies that matrix rescaled to the size it is given."""

    def __init__(self, full_matrix: np.ndarray, full: tuple[int, int]) -> None:
        self.full_matrix, self.full, self.sizes = full_matrix, full, []

    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationResult:
        h, w = moving.shape[-2:]
        self.sizes.append((h, w))
        sy, sx = h / self.full[0], w / self.full[1]
        a = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
        m = a @ self.full_matrix @ np.linalg.inv(a)
        field = warp.field_from_matrix(torch.from_numpy(m)[None].float(), h, w)
        diag = {"matrix": m.tolist(), "stages": [{"diagnostics": {"matrix": m.tolist(), "alternatives": {
            "far": {"matrix": m.tolist()}}}}]}
        return RegistrationResult(warp.warp(moving, field), field, [diag])


def test_a_working_size_reports_the_matrices_of_the_field_it_applies_in_full_size_pixels():
    full = (192, 256)
    truth = np.array([[1.04, 0.03, 5.0], [-0.02, 0.97, -3.0], [1e-4, -2e-4, 1.0]])
    registrar = _KnownHomography(truth, full)
    pipe = Pipeline(registrar=registrar, fuser=AverageFuser(), register_long_side=128)
    rng = np.random.default_rng(0)
    ir, vis = rng.random(full).astype(np.float32), rng.random(full).astype(np.float32)
    result = register_arrays(ir, vis, pipe, warn=False)
    assert registrar.sizes == [(96, 128)] and result.diagnostics["registered_at"] == [96, 128]
    reported = np.array(result.diagnostics["matrix"])
    for nested in (result.diagnostics["stages"][0]["diagnostics"]["matrix"],
                   result.diagnostics["stages"][0]["diagnostics"]["alternatives"]["far"]["matrix"]):
        np.testing.assert_allclose(np.array(nested), reported)
    # the reported matrix describes the field that was applied at full size (the field was upsampled: ~0.1 px)
    ys, xs = np.mgrid[0:full[0], 0:full[1]].astype(np.float64)
    q = reported @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    from_matrix = np.stack([(q[0] / q[2]).reshape(full) - xs, (q[1] / q[2]).reshape(full) - ys])
    assert np.abs(from_matrix - result.field).max() < 0.15
    np.testing.assert_allclose(reported / reported[2, 2], truth / truth[2, 2], atol=1e-9)


class _NoDiagnostics:
    def __call__(self, moving: torch.Tensor, fixed: torch.Tensor) -> RegistrationResult:
        return RegistrationResult(moving, torch.zeros(moving.shape[0], 2, *moving.shape[-2:]), [])


class _CountingFuser(AverageFuser):
    calls = 0

    def __call__(self, ir: torch.Tensor, vis: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return super().__call__(ir, vis)


def test_a_constant_ir_is_fused_as_the_visible_image_and_flagged_even_without_diagnostics():
    rng = torch.Generator().manual_seed(0)
    vis = torch.rand(2, 1, 24, 32, generator=rng)
    ir = torch.rand(2, 1, 24, 32, generator=rng)
    ir[0] = 0.4  # a lens cap on the first pair only
    pipe = Pipeline(registrar=_NoDiagnostics(), fuser=_CountingFuser())
    out = pipe(ir, vis)
    assert torch.equal(out.fused[0], vis[0]) and not torch.equal(out.fused[1], vis[1])
    assert out.diagnostics[0]["suspect"] and "constant" in out.diagnostics[0]["warning"]
    assert out.diagnostics[1] == {}
    _CountingFuser.calls = 0
    out = pipe(torch.full_like(ir, 0.4), vis)  # nothing to fuse in the whole batch: the fuser is not run
    assert _CountingFuser.calls == 0 and torch.equal(out.fused, vis)
