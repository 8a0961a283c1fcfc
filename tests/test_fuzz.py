"""Fuzzing the command line (issue 16 item 7): seeded malformed and odd inputs through ``alignfuse.cli.main``.

Each case (``tests/fuzzing.py``) must end as a demanding user expects: no traceback, no internal error, the
expected exit status, exactly one ``alignfuse: error:`` line naming the offending file on a user error, every good
pair written in folder mode. CI runs the first 240 cases (every family in turn; ``ALIGNFUSE_FUZZ_N`` sets the count);
``ALIGNFUSE_FUZZ_N=1000`` runs the full count (``benchmarks/fuzz.py`` prints its summary table);
``ALIGNFUSE_FUZZ_SEED`` picks another seeded sequence.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pytest

import fuzzing
from alignfuse.cli import build_parser

CI_N = 240  # the subset CI runs: < 20 s on one thread
N = int(os.environ.get("ALIGNFUSE_FUZZ_N", str(CI_N)))
SEED = int(os.environ.get("ALIGNFUSE_FUZZ_SEED", "0"))
FAMILIES = fuzzing.available_families()
SCHEDULE = fuzzing.schedule(N, FAMILIES)


@pytest.mark.parametrize("index", range(N), ids=[f"{i:04d}-{f.name}" for i, f in enumerate(SCHEDULE)])
def test_fuzz_case(index, tmp_path):
    case = fuzzing.generate_case(index, SEED, tmp_path, FAMILIES)
    outcome = fuzzing.run_case(case)
    problems = fuzzing.check(case, outcome)
    assert not problems, (f"{case.id} ({case.note}): {'; '.join(problems)}\n  argv: {' '.join(case.argv)}\n"
                          f"  stderr: {outcome.err.strip()[-1500:]}")


def test_every_family_and_image_kind_is_in_the_ci_subset():
    assert {f.name for f in fuzzing.schedule(CI_N, FAMILIES)} == {f.name for f in FAMILIES}
    # the odd-input families cycle through every image kind with different offsets: the subset sees each one
    turns = CI_N // len(FAMILIES)
    seen = set()
    for offset in (0, 7, 13, 19, 29):
        seen |= {fuzzing.ALL_KINDS[(t + offset) % len(fuzzing.ALL_KINDS)] for t in range(turns)}
    assert seen == set(fuzzing.ALL_KINDS)


def test_cases_are_deterministic(tmp_path):
    for index in range(len(FAMILIES)):
        a = fuzzing.generate_case(index, SEED, tmp_path / "a", FAMILIES)
        b = fuzzing.generate_case(index, SEED, tmp_path / "b", FAMILIES)
        assert [x.replace(str(tmp_path / "a"), "") for x in a.argv] == [x.replace(str(tmp_path / "b"), "")
                                                                         for x in b.argv]
        files_a = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
        files_b = sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
        assert files_a == files_b
        for rel in files_a:
            assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), (a.id, rel)


def test_families_needing_missing_verbs_are_skipped():
    """The calibrate / --rig / --ir-video families need their verbs; a parser that has them runs them."""
    parser = build_parser()
    present = {f.name for f in fuzzing.available_families(parser)}
    guarded = {"calibrate-folders": fuzzing.has_verb("calibrate"), "fuse-rig": fuzzing.has_option("fuse", "--rig"),
               "register-rig": fuzzing.has_option("register", "--rig"),
               "fuse-video": fuzzing.has_option("fuse", "--ir-video")}
    for name, needs in guarded.items():
        assert name in fuzzing.FAMILIES
        assert (name in present) == needs(parser)
    extended = argparse.ArgumentParser()
    sub = extended.add_subparsers()
    sub.add_parser("calibrate")
    fuse = sub.add_parser("fuse")
    fuse.add_argument("--rig")
    fuse.add_argument("--ir-video")
    sub.add_parser("register").add_argument("--rig")
    assert guarded.keys() <= {f.name for f in fuzzing.available_families(extended)}


@pytest.mark.parametrize("variant", fuzzing.RIG_VARIANTS)
def test_corrupt_rig_json_is_refused_naming_the_file(tmp_path, variant):
    from alignfuse.errors import UserError
    from alignfuse.registration.rig import RigModel

    path, got = fuzzing.corrupt_rig_json(np.random.default_rng(0), tmp_path / "rig.json", variant)
    assert got == variant
    with pytest.raises(UserError) as info:
        RigModel.load(path)
    assert str(path) in str(info.value)


def test_the_valid_rig_of_the_fuzzer_is_valid(tmp_path):
    import json

    from alignfuse.registration.rig import RigModel

    (tmp_path / "rig.json").write_text(json.dumps(fuzzing.VALID_RIG))
    assert RigModel.load(tmp_path / "rig.json").vis_size == (640, 480)


@pytest.mark.parametrize("variant", fuzzing.VIDEO_VARIANTS)
def test_corrupt_video_does_not_decode(tmp_path, variant):
    import cv2

    path, got = fuzzing.corrupt_video(np.random.default_rng(0), tmp_path / "v.mp4", variant)
    assert got == variant
    if variant in ("missing", "directory"):
        assert not path.is_file()
        return
    cap = cv2.VideoCapture(str(path))
    frames = 0
    while cap.isOpened() and frames < 10:
        ok, _ = cap.read()
        if not ok:
            break
        frames += 1
    cap.release()
    assert frames < 6 or variant == "header-then-garbage", f"{variant}: {frames} frames decoded"
