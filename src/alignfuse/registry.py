"""Name -> pipeline registry (the timm idea: a table of entry points with descriptions).

Two kinds of names:

* registered pipelines (``@register_pipeline("name", "description")``), e.g. the trained networks;
* classical combinations ``REGISTRAR+FUSER`` from :mod:`alignfuse.baselines`, e.g. ``ecc+gff``,
  ``identity+average``; every registrar x fuser pair is valid (the papers' Table 2 is such a grid).
  The fuser may be a learned one (:data:`alignfuse.learned_stages.LEARNED_FUSERS`, e.g. ``ecc+difn``).

The network pipelines register when :mod:`alignfuse.model_pipelines` is imported; every lookup here imports it
first (inside the function: model_pipelines imports this module). Importing the registry loads no torch, so
``alignfuse --help`` and a usage error answer at once.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import UnknownNameError, UserError

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["register_pipeline", "create_pipeline", "list_pipelines", "uses_weights", "DEFAULT_PIPELINE",
           "PipelineEntry"]

# The default `alignfuse fuse` pipeline (model_pipelines.default): cross-modal global search + MRRN local stage
# under one acceptance policy, DIFN fusion; handles real rigs and keeps aligned pairs at the identity
# (docs/RESULTS.md, Registration).
DEFAULT_PIPELINE = "default"


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


def _load_network_pipelines() -> None:
    from . import model_pipelines  # noqa: F401  (registers the network pipelines)


def _grid_fusers(shipped_only: bool = False) -> dict[str, Callable]:
    """Classical fusers (``factory()``) plus the learned ones (``factory(weights_dir)``); with ``shipped_only``,
    only the learned ones whose weights ship (what ``alignfuse models`` lists)."""
    from .baselines import FUSERS
    from .learned_stages import LEARNED_FUSERS, weights_available

    learned = {k: v for k, v in LEARNED_FUSERS.items() if not shipped_only or weights_available(k)}
    return {**FUSERS, **learned}


def _classical(name: str, weights_dir: str | Path | None = None, register_long_side: int | None = None) -> Pipeline:
    """``REGISTRAR+FUSER``; a learned fuser reads ``weights_dir`` (the shipped weights if None)."""
    from .baselines import FUSERS, REGISTRARS
    from .learned_stages import LEARNED_FUSERS
    from .pipeline import Pipeline

    reg_name, _, fuse_name = name.partition("+")
    fuser = LEARNED_FUSERS[fuse_name](weights_dir) if fuse_name in LEARNED_FUSERS else FUSERS[fuse_name]()
    return Pipeline(registrar=REGISTRARS[reg_name](), fuser=fuser, name=name, register_long_side=register_long_side)


def _factory(name: str) -> Callable[..., Pipeline]:
    from .baselines import REGISTRARS

    _load_network_pipelines()
    if name in _REGISTRY:
        return _REGISTRY[name].factory
    reg_name, plus, fuse_name = name.partition("+")
    if plus and reg_name in REGISTRARS and fuse_name in _grid_fusers():
        return functools.partial(_classical, name)
    known = list(list_pipelines())
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    raise UnknownNameError(f"unknown model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else "")
                           + f"; known: {', '.join(known)} (run `alignfuse models`)")


def uses_weights(name: str) -> bool:
    """True when pipeline ``name`` reads network weights, i.e. a weights folder changes what it does."""
    from .learned_stages import LEARNED_FUSERS

    _load_network_pipelines()
    if name in _REGISTRY:
        return "weights_dir" in inspect.signature(_REGISTRY[name].factory).parameters
    return name.partition("+")[2] in LEARNED_FUSERS


# the command line's flag for a pipeline option, where it has one (an error names what the user typed)
CLI_FLAGS = {"rig": "--rig", "local": "--no-local", "ir_field": "--ir-field", "weights_dir": "--weights-dir"}


def pipelines_taking(option: str) -> list[str]:
    """The registered pipelines whose factory takes keyword ``option``."""
    def takes(factory: Callable[..., Pipeline]) -> bool:
        params = inspect.signature(factory).parameters
        return option in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())

    _load_network_pipelines()
    return [n for n, e in _REGISTRY.items() if takes(e.factory)]


def _check_options(name: str, factory: Callable[..., Pipeline], kwargs: dict[str, Any]) -> None:
    """A wrong option is the caller's error: a UserError naming the pipelines that take it (a command-line option)
    or the options this one accepts, not a TypeError."""
    signature = inspect.signature(factory)
    try:
        signature.bind(**kwargs)
    except TypeError:
        unknown = sorted(set(kwargs) - set(signature.parameters))
        flags = [CLI_FLAGS[k] for k in unknown if k in CLI_FLAGS]
        if flags and len(flags) == len(unknown):
            takers = sorted(set.intersection(*(set(pipelines_taking(k)) for k in unknown)))
            raise UserError(f"{name} takes no {', '.join(unknown)} option ({', '.join(flags)}); "
                            f"{'they apply' if len(unknown) > 1 else 'it applies'} to {', '.join(takers)}") from None
        raise UserError(f"{name}: unknown option(s) {', '.join(unknown)}; "
                        f"accepted: {', '.join(signature.parameters) or 'none'}") from None


def create_pipeline(name: str = DEFAULT_PIPELINE, weights_dir: str | Path | None = None, **kwargs: Any) -> Pipeline:
    """Build the pipeline called ``name``.

    ``weights_dir``: read network weights from this folder instead of the shipped ones; a pipeline that reads
    none warns that it is ignored. Raises :class:`~alignfuse.errors.UnknownNameError` (a ``KeyError``) with the
    known names for an unknown ``name``, :class:`~alignfuse.errors.UserError` for an option it does not take.
    """
    factory = _factory(name)
    if weights_dir is not None:
        if uses_weights(name):
            kwargs["weights_dir"] = weights_dir
        else:
            warnings.warn(f"{name} reads no network weights; the weights folder {weights_dir} is ignored",
                          UserWarning, stacklevel=2)
    _check_options(name, factory, kwargs)
    return factory(**kwargs)


def list_pipelines(classical: bool = True) -> dict[str, str]:
    """{name: description} of registered pipelines, then the classical registrar+fuser grid."""
    _load_network_pipelines()
    out = {e.name: e.description for e in _REGISTRY.values()}
    if classical:
        from .baselines import FUSERS, REGISTRARS

        for r in REGISTRARS:
            for f in _grid_fusers(shipped_only=True):
                kind = "classical" if f in FUSERS else "classical registration + learned fusion"
                out.setdefault(f"{r}+{f}", f"{kind}: {r} registration, {f} fusion")
    return out
