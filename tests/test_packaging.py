"""Packaging: declared dependency ranges vs the exact versions this repository installs for itself."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _torch_requirement() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    found = [d for d in deps if re.match(r"torch\s*([<>=!~;\[]|$)", d)]
    assert len(found) == 1, deps
    return found[0]


def test_torch_is_a_range_in_pyproject_and_pinned_only_in_the_constraints():
    """An exact torch in pyproject made pip replace a user's CUDA torch with ours; only our installs pin it."""
    requirement = _torch_requirement()
    assert "==" not in requirement and re.search(r">=\s*2\.1\b", requirement), requirement
    pins = [ln.split("#")[0].strip() for ln in (ROOT / "constraints.txt").read_text().splitlines()]
    assert "torch==2.13.0" in pins
    assert re.search(r"pip install .*-c constraints\.txt", (ROOT / "Makefile").read_text())
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:  # packaging is not a dependency; the regexes above still ran
        return
    spec = Requirement(requirement).specifier
    # another supported torch already installed (a CUDA build, say) satisfies it, so pip leaves it in place
    for version in ("2.1.0", "2.4.1+cu121", "2.13.0", torch.__version__):
        assert Version(version) in spec, version
    assert Version("2.0.1") not in spec  # no torch.utils.flop_counter (models/rfvif.py)
