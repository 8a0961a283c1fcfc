"""Packaging: declared dependency ranges vs the exact versions this repository installs for itself."""

from __future__ import annotations

import re
import subprocess
import sys
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


def _run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_the_package_and_the_command_line_parser_load_no_torch():
    """`alignfuse --help` and usage errors answer at once: torch loads only when a pipeline or an image is used."""
    code = ("import sys; import alignfuse; from alignfuse.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules, alignfuse.DEFAULT_PIPELINE in alignfuse.list_models(), "
            "'torch' in sys.modules, callable(alignfuse.load_pipeline))")
    assert _run_python(code) == "False True True True"
