"""alignfuse: fusion of misaligned infrared and visible images (UMF-CMGR, RFVIF, classical baselines).

Public API::

    import alignfuse
    pipe = alignfuse.load_pipeline()                 # the default pipeline; any name from alignfuse.list_models()
    result = alignfuse.fuse_arrays(ir, vis, pipe)    # numpy float32 [0,1]; result.fused, .aligned_ir, .field
    alignfuse.fuse("ir.png", "vis.png", "out.png")   # files in, file out

Fields everywhere are float32 (2, H, W) pixel (dx, dy) with aligned[y, x] = moving[y + dy, x + dx].
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import AlignfuseWarning, UserError
from .registry import DEFAULT_PIPELINE, list_pipelines

if TYPE_CHECKING:
    from .api import FuseResult, fuse_arrays, load_pipeline, register_arrays
    from .pipeline import Pipeline

# loaded on first use (PEP 562), so importing the package (and `alignfuse --help`) does not load torch
_LAZY = {"FuseResult": "api", "fuse_arrays": "api", "load_pipeline": "api", "register_arrays": "api",
         "Pipeline": "pipeline"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})

__version__ = "0.1.0"
__all__ = ["fuse", "register", "fuse_arrays", "register_arrays", "load_pipeline", "list_models", "Pipeline",
           "FuseResult", "DEFAULT_PIPELINE", "UserError", "AlignfuseWarning"]


def list_models() -> dict[str, str]:
    """{pipeline name: description} of everything `load_pipeline` accepts."""
    return list_pipelines()


def _warn_notes(notes: list[str]) -> list[str]:
    """The notes of reading a pair (each names its file) as warnings, where the command line prints them."""
    for note in notes:
        warnings.warn(note, AlignfuseWarning, stacklevel=3)
    return list(notes)


def fuse(ir_path: str | Path, vis_path: str | Path, out_path: str | Path | None = None,
         model: str = DEFAULT_PIPELINE, device: str = "cpu", resize_ir: bool = False) -> FuseResult:
    """Read a pair, register and fuse it; write the fused image to ``out_path`` if given (checked first: a path
    that is one of the inputs, or that no writer can write, is a :class:`UserError` before any work). What was
    converted on reading (``FuseResult.notes``) and a suspect registration are :class:`AlignfuseWarning` s."""
    from . import io
    from .api import fuse_arrays, load_pipeline

    io.check_outputs([ir_path, vis_path], [(out_path, "output")])
    pair = io.load_pair(Path(ir_path), Path(vis_path), resize_ir=resize_ir)
    notes = _warn_notes(pair.notes)
    result = fuse_arrays(pair.ir, pair.vis, load_pipeline(model, device=device),
                         ir_size=pair.ir_size if pair.ir_resized else None)
    result.notes = notes
    if out_path is not None:
        io.write_image(Path(out_path), result.fused)
    return result


def register(ir_path: str | Path, vis_path: str | Path, out_path: str | Path | None = None,
             model: str = DEFAULT_PIPELINE, device: str = "cpu", resize_ir: bool = False) -> FuseResult:
    """Read a pair and register the IR onto the VIS; write the aligned IR to ``out_path`` if given (checked first,
    as in :func:`fuse`)."""
    from . import io
    from .api import load_pipeline, register_arrays

    io.check_outputs([ir_path, vis_path], [(out_path, "output")])
    pair = io.load_pair(Path(ir_path), Path(vis_path), resize_ir=resize_ir)
    notes = _warn_notes(pair.notes)
    result = register_arrays(pair.ir, pair.vis, load_pipeline(model, device=device),
                             ir_size=pair.ir_size if pair.ir_resized else None)
    result.notes = notes
    if out_path is not None:
        io.write_image(Path(out_path), result.aligned_ir)
    return result
