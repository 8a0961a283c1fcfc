"""Name -> pipeline registry (the timm idea: a table of entry points with descriptions).

Two kinds of names:

* registered pipelines (``@register_pipeline("name", "description")``), e.g. the trained networks;
* classical combinations ``REGISTRAR+FUSER`` from :mod:`alignfuse.baselines`, e.g. ``ecc+gff``,
  ``identity+average``; every registrar x fuser pair is valid (the papers' Table 2 is such a grid).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from .errors import UnknownNameError, UserError
from .pipeline import Pipeline

__all__ = ["register_pipeline", "create_pipeline", "list_pipelines", "DEFAULT_PIPELINE", "PipelineEntry"]

# The default `alignfuse fuse` pipeline: UMF-CMGR's registration network (MRRN on MIND descriptors, against the
# visible luminance) + DIFN fusion. Best measured registration and CC/SSIM/VIFF on small misalignment on both
# test sets (docs/RESULTS.md §9); `ecc+gff` was the default before the MRRN shipped.
DEFAULT_PIPELINE = "umf-nocpstn+difn"


@dataclass(frozen=True)
class PipelineEntry:
    name: str
    description: str
    factory: Callable[..., Pipeline]


_REGISTRY: dict[str, PipelineEntry] = {}


def register_pipeline(name: str, description: str) -> Callable[[Callable[..., Pipeline]], Callable[..., Pipeline]]:
    """Decorator: register ``factory(**kwargs) -> Pipeline`` under ``name``."""

    def decorate(factory: Callable[..., Pipeline]) -> Callable[..., Pipeline]:
        if name in _REGISTRY:
            raise ValueError(f"pipeline {name!r} registered twice")
        _REGISTRY[name] = PipelineEntry(name, description, factory)
        return factory

    return decorate


def _load_model_pipelines() -> None:
    """Import the modules that register network pipelines (idempotent)."""
    from . import model_pipelines  # noqa: F401  (registers on import)


def _grid_fusers() -> dict[str, Callable]:
    """Classical fusers plus the learned ones whose weights ship."""
    from .baselines import FUSERS
    from .model_pipelines import LEARNED_FUSERS, WEIGHT_NAMES, weights_available

    learned = {k: v for k, v in LEARNED_FUSERS.items() if k in WEIGHT_NAMES and weights_available(k)}
    return {**FUSERS, **learned}


def _classical(name: str, register_long_side: int | None = None) -> Pipeline:
    from .baselines import REGISTRARS

    fusers = _grid_fusers()
    reg_name, _, fuse_name = name.partition("+")
    if reg_name not in REGISTRARS or fuse_name not in fusers:
        raise KeyError(name)
    return Pipeline(registrar=REGISTRARS[reg_name](), fuser=fusers[fuse_name](), name=name,
                    register_long_side=register_long_side)


def _check_options(name: str, factory: Callable[..., Pipeline], *args, **kwargs) -> None:
    """A wrong option is the caller's error: a UserError naming the accepted ones, not a TypeError."""
    signature = inspect.signature(factory)
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        accepted = list(signature.parameters)[len(args):]
        raise UserError(f"{name}: unknown option(s) {', '.join(sorted(set(kwargs) - set(accepted)))}; "
                        f"accepted: {', '.join(accepted) or 'none'}") from None


def create_pipeline(name: str = DEFAULT_PIPELINE, **kwargs) -> Pipeline:
    """Build the pipeline called ``name``; :class:`~alignfuse.errors.UnknownNameError` (a ``KeyError``) with the
    known names if there is none, :class:`~alignfuse.errors.UserError` for an option it does not take."""
    _load_model_pipelines()
    if name in _REGISTRY:
        _check_options(name, _REGISTRY[name].factory, **kwargs)
        return _REGISTRY[name].factory(**kwargs)
    if "+" in name:
        try:
            _check_options(name, _classical, name, **kwargs)
            return _classical(name, **kwargs)
        except KeyError:
            pass
    raise UnknownNameError(f"unknown model {name!r}; known: {', '.join(list_pipelines())} (run `alignfuse models`)")


def is_network_pipeline(name: str) -> bool:
    """True for registered (weight-loading) pipelines, False for registrar+fuser combinations."""
    _load_model_pipelines()
    return name in _REGISTRY


def list_pipelines(classical: bool = True) -> dict[str, str]:
    """{name: description} of registered pipelines, then the classical registrar+fuser grid."""
    _load_model_pipelines()
    out = {e.name: e.description for e in _REGISTRY.values()}
    if classical:
        from .baselines import FUSERS, REGISTRARS

        for r in REGISTRARS:
            for f in _grid_fusers():
                kind = "classical" if f in FUSERS else "classical registration + learned fusion"
                out.setdefault(f"{r}+{f}", f"{kind}: {r} registration, {f} fusion")
    return out
