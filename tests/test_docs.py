"""The README quotes measured numbers; each must come from docs/RESULTS.md, and recommended settings must be
reachable from the command line."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_readme_timing_and_tre_is_in_results():
    readme = (ROOT / "README.md").read_text()
    results = (ROOT / "docs" / "RESULTS.md").read_text()
    quoted = set(re.findall(r"(\d+\.\d+) s\b", readme)) | set(re.findall(r"(\d+\.\d+) (?:raw )?px\b", readme))
    missing = sorted(q for q in quoted if q not in results)
    assert not missing, f"README figures not found in docs/RESULTS.md: {missing}"


def test_readme_recommends_no_python_only_setting():
    """Every pipeline the README recommends is a name `--model` accepts (no keyword-only variants)."""
    readme = (ROOT / "README.md").read_text()
    assert "global_min_shift" not in readme
    from alignfuse import list_models

    names = set(list_models())
    for name in re.findall(r"--model ([\w+:.-]+)", readme):
        if name not in ("NAME",):
            assert name in names, name
