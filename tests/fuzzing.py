"""Seeded fuzz cases for the command line (issue 16 item 7): malformed and odd inputs through ``alignfuse.cli.main``.

A *case* is a few files written into a folder of its own, an ``argv`` for :func:`alignfuse.cli.main` and what a
demanding user expects: success (exit 0, the outputs written on the visible grid), a user error (exit 2, exactly
one ``alignfuse: error:`` line naming the offending file, no output written), or a batch (folder mode: exit 1
when any pair fails, every good pair written, one failure line per bad pair naming it). Never a traceback, never
an ``internal error``, never a stray line on stderr.

Cases come from *families* (:data:`FAMILIES`, filled by the :func:`family` decorator): a family builds one case
from a seeded generator. ``generate_case(i, seed, root)`` gives the same files and argv for the same
``(i, seed)`` on every machine; case ``i`` belongs to family ``schedule(n)[i]`` (families take turns, so any
prefix covers every family; a family that becomes available shifts the sequence). A family may say which command-line verbs or options it needs (``requires``): it is
skipped while :func:`alignfuse.cli.build_parser` lacks them (the ``calibrate`` verb, ``--rig`` and
``--ir-video`` families, whose input generators :func:`corrupt_rig_json` and :func:`corrupt_video` are ready).

Used by ``tests/test_fuzz.py`` (a seeded subset in CI; ``ALIGNFUSE_FUZZ_N=1000`` for the full count) and by
``benchmarks/fuzz.py`` (the full count, with a summary table).
"""

from __future__ import annotations

import argparse
import contextlib
import io as _io
import json
import os
import re
import struct
import sys
import tempfile
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image

OK, USER_ERROR, EITHER, BATCH = "ok", "user-error", "ok-or-user-error", "batch"
CHEAP = "identity+average"  # the cheapest pipeline: what most cases run

__all__ = ["Case", "Family", "FAMILIES", "family", "available_families", "schedule", "generate_case",
           "generate", "run_case", "check", "corrupt_rig_json", "corrupt_video", "IMAGE_KINDS"]


# ----------------------------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One fuzz input: the argv to run and what must happen.

    expect: OK, USER_ERROR, EITHER (a corrupted file that a decoder may or may not notice: either outcome is
        right, a crash is not) or BATCH (folder mode).
    names: USER_ERROR/EITHER: the error line must name one of these paths (the path or its base name).
    outputs: files that must exist afterwards (OK, BATCH), with the (H, W) they must have when not None.
    absent: files that must not exist afterwards (nothing half-written on an error, no output for a bad pair).
    failed: BATCH: stems that must each be named by exactly one failure line ("  STEM: ..." on stderr).
    code: BATCH: expected exit status (1 when anything failed or was unpaired, else 0).
    json_out: stdout must be one strict JSON object (``metrics --json``); json_last_line: its last line
        (``register -v``).
    field_out, field_shape: a field that must be written on success (the ``--field`` value as given; ``.npy`` is
        appended when missing) and its (2, H, W).
    note: what the case is, for reports.
    unchanged: every file of the case folder before the run but the outputs (filled by :func:`generate_case`):
        no run may change an input.
    """

    family: str
    index: int
    argv: list[str]
    expect: str
    names: tuple[str, ...] = ()
    outputs: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    absent: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    code: int | None = None
    json_out: bool = False
    json_last_line: bool = False
    field_out: str | None = None
    field_shape: tuple[int, int, int] | None = None
    note: str = ""
    unchanged: dict[str, bytes] = field(default_factory=dict)  # files whose bytes the run must not change
    root: Path | None = None
    restore: list[Path] = field(default_factory=list)  # folders made read-only, given back their mode afterwards

    @property
    def id(self) -> str:
        return f"{self.index:04d}-{self.family}"


@dataclass(frozen=True)
class Family:
    """A case family: ``make(ctx)`` builds one case; ``requires(parser)`` says whether the CLI can run it."""

    name: str
    make: Callable[["Ctx"], Case]
    what: str
    requires: Callable[[argparse.ArgumentParser], bool] | None = None
    slow: bool = False


FAMILIES: dict[str, Family] = {}


def family(name: str, what: str, requires: Callable[[argparse.ArgumentParser], bool] | None = None,
           slow: bool = False) -> Callable[[Callable[["Ctx"], Case]], Callable[["Ctx"], Case]]:
    """Register a case family (the hook for new ones: ``@family("calibrate-xyz", "...", requires=has_verb(...))``)."""

    def deco(make: Callable[["Ctx"], Case]) -> Callable[["Ctx"], Case]:
        if name in FAMILIES:
            raise ValueError(f"fuzz family {name!r} registered twice")
        FAMILIES[name] = Family(name, make, what, requires, slow)
        return make

    return deco


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # noqa: SLF001 - argparse offers no public way to list subcommands
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    return {}


def has_verb(verb: str) -> Callable[[argparse.ArgumentParser], bool]:
    """``requires`` predicate: the CLI has the subcommand ``verb``."""
    return lambda parser: verb in _subparsers(parser)


def has_option(verb: str, *options: str) -> Callable[[argparse.ArgumentParser], bool]:
    """``requires`` predicate: subcommand ``verb`` accepts every option in ``options`` (e.g. ``--rig``)."""

    def pred(parser: argparse.ArgumentParser) -> bool:
        sub = _subparsers(parser).get(verb)
        return sub is not None and all(o in sub._option_string_actions for o in options)  # noqa: SLF001

    return pred


def available_families(parser: argparse.ArgumentParser | None = None) -> list[Family]:
    """The families the CLI can run (each ``requires`` met), in registration order."""
    if parser is None:
        from alignfuse.cli import build_parser

        parser = build_parser()
    return [f for f in FAMILIES.values() if f.requires is None or f.requires(parser)]


def schedule(n: int, families: list[Family] | None = None) -> list[Family]:
    """The family of each of the first ``n`` cases: the families take turns."""
    fams = families if families is not None else available_families()
    return [fams[i % len(fams)] for i in range(n)]


@dataclass
class Ctx:
    """What a family's ``make`` gets: a seeded generator, its own folder, and ``turn`` (how many cases of this
    family came before this one: families cycle through their variants with it, so a short run covers them)."""

    rng: np.random.Generator
    dir: Path
    turn: int
    index: int

    def pick(self, options, offset: int = 0):
        """Variant number ``turn + offset`` of ``options`` (cycling)."""
        options = list(options)
        return options[(self.turn + offset) % len(options)]

    def path(self, name: str) -> Path:
        return self.dir / name


def generate_case(index: int, seed: int, root: Path, families: list[Family] | None = None) -> Case:
    """Build case ``index`` of the seeded sequence in ``root / <case id>`` (files written, argv ready)."""
    fams = families if families is not None else available_families()
    fam = fams[index % len(fams)]
    d = Path(root) / f"{index:04d}-{fam.name}"
    d.mkdir(parents=True, exist_ok=False)
    rng = np.random.default_rng([seed, index])
    case = fam.make(Ctx(rng, d, index // len(fams), index))
    case.family, case.index, case.root = fam.name, index, d
    outputs = {Path(p) for p in case.outputs} | ({Path(case.field_out)} if case.field_out else set())
    for p in sorted(d.rglob("*")):  # the inputs: no run may change them
        if p.is_file() and p not in outputs:
            case.unchanged.setdefault(str(p), p.read_bytes())
    return case


def generate(n: int, seed: int, root: Path, families: list[Family] | None = None) -> list[Case]:
    fams = families if families is not None else available_families()
    return [generate_case(i, seed, root, fams) for i in range(n)]


# ------------------------------------------------------------------------------------------ run, check
@dataclass
class Outcome:
    code: int | str
    out: str
    err: str
    seconds: float


@contextlib.contextmanager
def _capture_fds():
    """Point file descriptors 1 and 2 at temporary files: what C libraries (libpng, libtiff, OpenCV's log) print
    bypasses ``sys.stderr`` but reaches the user's terminal all the same. Yields a dict filled on exit."""
    got = {"out": "", "err": ""}
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved, files = {}, {}
    try:
        for fd in (1, 2):
            files[fd] = tempfile.TemporaryFile()
            saved[fd] = os.dup(fd)
            os.dup2(files[fd].fileno(), fd)
        yield got
    finally:
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
        for fd, f in files.items():
            f.seek(0)
            got["out" if fd == 1 else "err"] = f.read().decode("utf-8", "replace")
            f.close()


def run_case(case: Case) -> Outcome:
    """Run ``case.argv`` through ``alignfuse.cli.main`` in this process; Python's stdout/stderr and what C code
    writes to file descriptors 1 and 2 are captured (both reach a user's terminal)."""
    import time

    from alignfuse.cli import main

    out, err = _io.StringIO(), _io.StringIO()
    t0 = time.perf_counter()
    with _capture_fds() as raw, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: int | str = main(case.argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # noqa: BLE001 - an escaped exception is what the fuzzer looks for
            code = "raised"
            err.write(traceback.format_exc())
    seconds = time.perf_counter() - t0
    for d in case.restore:
        with contextlib.suppress(OSError):
            d.chmod(0o755)
    return Outcome(code, out.getvalue() + raw["out"], err.getvalue() + raw["err"], seconds)


def _names(line: str, names: tuple[str, ...]) -> bool:
    return any(n in line or Path(n).name in line for n in names)


def _names_stem(line: str, stem: str) -> bool:
    """A folder-mode report line is about ``stem``: "  STEM: why", "  DIR/STEM.EXT: why" or "  DIR: stem 'STEM' ..."."""
    return (line.startswith(f"  {stem}: ") or re.match(rf"  (\S*/)?{re.escape(stem)}\.[^/\s:]+: ", line) is not None
            or f": stem {stem!r} " in line or line.startswith(f"  {stem!r} is listed"))


def strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(f"non-standard constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _is_progress(line: str) -> bool:
    return "|" in line and ("it/s" in line or "pair/s" in line or "s/pair" in line or "%|" in line)


def check(case: Case, res: Outcome) -> list[str]:
    """What went wrong with ``case`` (empty: it behaved as a demanding user expects)."""
    from alignfuse import io

    problems: list[str] = []
    text = res.out + res.err
    if "Traceback" in text:
        problems.append("traceback: " + res.err.strip().splitlines()[-1][:200] if res.err.strip() else "traceback")
    if "internal error" in res.err:
        problems.append("internal error: " + next(ln for ln in res.err.splitlines() if "internal error" in ln)[:300])
    lines = [ln for chunk in res.err.splitlines() for ln in chunk.split("\r") if ln.strip()]
    lines = [ln for ln in lines if not _is_progress(ln)]
    errors = [ln for ln in lines if ln.startswith("alignfuse: error:")]
    verbose_register = case.argv[0] == "register" and "-v" in case.argv  # its summary goes to stderr (JSON on stdout)
    stray = [ln for ln in lines
             if not ln.startswith("alignfuse: ") and not (case.expect == BATCH and ln.startswith("  "))
             and not (verbose_register and ln.startswith("registered "))]
    if stray and "Traceback" not in text:
        problems.append(f"stray stderr line: {stray[0][:200]!r}")
    leaked = [ln for ln in lines if ln.startswith("alignfuse: warning:") and "encountered in" in ln]
    if leaked:
        problems.append(f"numerical warning leaked: {leaked[0][:200]!r}")
    files = {Path(a).name for a in case.argv if "/" in a} - {""}
    anonymous = [ln for ln in lines if ln.startswith(("alignfuse: warning:", "alignfuse: note:"))
                 and not any(f in ln for f in files)]
    if anonymous:
        problems.append(f"warning/note names no file: {anonymous[0][:200]!r}")

    expect = case.expect
    if expect == EITHER:
        expect = OK if res.code == 0 else USER_ERROR
    if expect == USER_ERROR:
        if res.code != 2:
            problems.append(f"exit status {res.code}, expected 2 (user error)")
        if len(errors) != 1:
            problems.append(f"{len(errors)} 'alignfuse: error:' lines, expected exactly 1")
        elif case.names and not _names(errors[0], case.names):
            problems.append(f"error line does not name {[Path(n).name for n in case.names]}: {errors[0][:300]!r}")
    elif expect == OK:
        if res.code != 0:
            problems.append(f"exit status {res.code}, expected 0: {(errors or lines or [''])[0][:300]!r}")
    elif expect == BATCH:
        if res.code != case.code:
            problems.append(f"exit status {res.code}, expected {case.code}: {(errors or [''])[0][:300]!r}")
        if errors:
            problems.append(f"folder mode printed an error line: {errors[0][:300]!r}")
        report = [ln for ln in lines if ln.startswith("  ")]
        for stem in case.failed:
            hits = [ln for ln in report if _names_stem(ln, stem)]
            if len(hits) != 1:
                problems.append(f"bad pair {stem!r} named by {len(hits)} failure lines, expected 1")
    if (case.json_out or case.json_last_line) and res.code == 0:
        text = res.out.strip().splitlines()[-1] if case.json_last_line and res.out.strip() else res.out
        try:
            if not isinstance(strict_json(text), dict):
                problems.append("JSON output is not one JSON object")
        except ValueError as exc:
            problems.append(f"JSON output is not strict JSON ({exc})")
    if res.code == 0 or expect == BATCH:
        for path, shape in case.outputs.items():
            p = Path(path)
            if not p.is_file():
                problems.append(f"output {p.name} not written")
            elif shape is not None:
                try:
                    got = io.read_image(p).data.shape[:2]
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"output {p.name} unreadable: {exc}")
                    continue
                if got != tuple(shape):
                    problems.append(f"output {p.name} is {got[1]}x{got[0]}, expected {shape[1]}x{shape[0]}")
        if case.field_out is not None and res.code == 0:
            fp = io.field_path(case.field_out)
            if not fp.is_file():
                problems.append(f"field {fp.name} not written")
            elif case.field_shape is not None and np.load(fp).shape != tuple(case.field_shape):
                problems.append(f"field {fp.name} has shape {np.load(fp).shape}, expected {case.field_shape}")
    for path, data in case.unchanged.items():
        if not Path(path).is_file() or Path(path).read_bytes() != data:
            problems.append(f"input {Path(path).name} was modified")
    for path in case.absent:
        if Path(path).exists() and not Path(path).is_dir():
            why = "failed" if res.code else "should not write it"
            problems.append(f"{Path(path).name} written although the run {why}")
    if case.root is not None:
        temps = [p.name for p in case.root.rglob(".*.tmp")]
        if temps:
            problems.append(f"temporary files left behind: {temps[:3]}")
    return problems


# --------------------------------------------------------------------------------------------- images
def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random (h, w) float32 in [0, 1] (registrable structure, not white noise)."""
    small = rng.random((max(2, h // 6), max(2, w // 6))).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) if (h, w) != small.shape else small
    img = img + 0.15 * rng.random((h, w)).astype(np.float32)
    lo, hi = float(img.min()), float(img.max())
    return ((img - lo) / (hi - lo if hi > lo else 1.0)).astype(np.float32)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def _u16(x: np.ndarray, lo: float = 0, hi: float = 65535) -> np.ndarray:
    return np.clip(np.round(lo + x * (hi - lo)), 0, 65535).astype(np.uint16)


def _rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return np.stack([_texture(rng, h, w) for _ in range(3)], -1)


_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP",
                ".gif": "GIF", ".webp": "WEBP"}


def _save(im: Image.Image, path: Path, fmt: str | None = None, **kw) -> Path:
    im.save(path, format=fmt or _PIL_FORMATS[path.suffix.lower()], **kw)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(w: int, h: int, raw: bytes = b"", bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A PNG with any IHDR (0 or absurd sizes included) and ``raw`` (unfiltered rows are the caller's job)."""
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def tiff_bytes(w: int, h: int, data: bytes, bits: int = 8, sample_format: int = 1, spp: int = 1) -> bytes:
    """A minimal little-endian one-strip uncompressed TIFF with any width/height (0 included); ``spp`` samples
    per pixel (1 grey, 3 RGB), ``sample_format`` 1 unsigned, 2 signed, 3 float."""
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, spp, bits), (259, 3, 1, 1), (262, 3, 1, 1 if spp == 1 else 2),
               (273, 4, 1, 0), (277, 3, 1, spp), (278, 4, 1, max(h, 1)), (279, 4, 1, len(data)),
               (284, 3, 1, 1), (339, 3, spp, sample_format)]
    ifd_size = 2 + 12 * len(entries) + 4
    extra = bytearray()  # per-sample values that do not fit in an entry
    out = bytearray(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    arrays = {}
    for tag, typ, count, value in entries:
        if count > 2:
            arrays[tag] = 8 + ifd_size + len(extra)
            extra += struct.pack(f"<{count}H", *([value] * count))
    data_offset = 8 + ifd_size + len(extra)
    for tag, typ, count, value in entries:
        packed = struct.pack("<HHI", tag, typ, count)
        if tag in arrays:
            packed += struct.pack("<I", arrays[tag])
        elif tag == 273:
            packed += struct.pack("<I", data_offset)
        else:
            packed += struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value)
        out += packed
    out += struct.pack("<I", 0)
    return bytes(out + extra + data)


@dataclass
class Img:
    """An input file written by an image kind: ``status`` OK / USER_ERROR / EITHER; ``shape`` (H, W) as read."""

    path: Path
    status: str
    shape: tuple[int, int] | None
    kind: str
    colour: bool = False


# kind(rng, stem, h, w) -> Img. ``stem`` is the path without extension; (h, w) the size wanted (a kind with a size
# of its own, e.g. "too-small", ignores it). "folder": usable in folder mode (an IMAGE_EXTS extension, a file).
IMAGE_KINDS: dict[str, tuple[Callable[..., Img], str, bool]] = {}


def kind(name: str, status: str, folder: bool = True):
    def deco(fn):
        IMAGE_KINDS[name] = (fn, status, folder)
        return fn

    return deco


def make_image(kind_name: str, rng: np.random.Generator, stem: Path, h: int, w: int) -> Img:
    fn, status, _ = IMAGE_KINDS[kind_name]
    img = fn(rng, stem, h, w)
    img.status = img.status or status
    img.kind = kind_name
    return img


def _ext(rng: np.random.Generator, exts: tuple[str, ...]) -> str:
    return exts[int(rng.integers(len(exts)))]


# ---- valid, ordinary or odd: must work
@kind("grey8", OK)
def _k_grey8(rng, stem, h, w):
    ext = _ext(rng, (".png", ".jpg", ".tif", ".bmp", ".jpeg", ".tiff"))
    return Img(_save(Image.fromarray(_u8(_texture(rng, h, w))), stem.with_suffix(ext)), OK, (h, w), "")


@kind("rgb8", OK)
def _k_rgb8(rng, stem, h, w):
    ext = _ext(rng, (".png", ".jpg", ".tif", ".bmp"))
    return Img(_save(Image.fromarray(_u8(_rgb(rng, h, w))), stem.with_suffix(ext)), OK, (h, w), "", True)


@kind("progressive-jpeg", OK)
def _k_progressive(rng, stem, h, w):
    path = _save(Image.fromarray(_u8(_rgb(rng, h, w))), stem.with_suffix(".jpg"), progressive=True, quality=30)
    return Img(path, OK, (h, w), "", True)


@kind("palette-png", OK)
def _k_palette(rng, stem, h, w):
    im = Image.fromarray(_u8(_rgb(rng, h, w))).convert("P", palette=Image.Palette.ADAPTIVE,
                                                       colors=int(rng.choice([2, 16, 256])))
    kw = {"transparency": 0} if rng.random() < 0.5 else {}
    if rng.random() < 0.3:
        kw["bits"] = 4
    return Img(_save(im, stem.with_suffix(".png"), **kw), OK, (h, w), "", True)


@kind("palette-gif", OK, folder=False)
def _k_gif(rng, stem, h, w):
    im = Image.fromarray(_u8(_rgb(rng, h, w))).convert("P", palette=Image.Palette.ADAPTIVE)
    return Img(_save(im, stem.with_suffix(".gif")), OK, (h, w), "", True)


@kind("cmyk", OK)
def _k_cmyk(rng, stem, h, w):
    ext = _ext(rng, (".jpg", ".tif"))
    return Img(_save(Image.fromarray(_u8(_rgb(rng, h, w))).convert("CMYK"), stem.with_suffix(ext)), OK, (h, w), "",
               True)


@kind("la-png", OK)
def _k_la(rng, stem, h, w):
    a = np.stack([_u8(_texture(rng, h, w)), _u8(rng.random((h, w)))], -1)
    ext = _ext(rng, (".png", ".tif"))
    return Img(_save(Image.fromarray(a, "LA"), stem.with_suffix(ext)), OK, (h, w), "")


@kind("rgba", OK)
def _k_rgba(rng, stem, h, w):
    a = np.concatenate([_u8(_rgb(rng, h, w)), _u8(rng.random((h, w, 1)))], -1)
    ext = _ext(rng, (".png", ".tif"))
    return Img(_save(Image.fromarray(a, "RGBA"), stem.with_suffix(ext)), OK, (h, w), "", True)


@kind("1-bit", OK)
def _k_bit1(rng, stem, h, w):
    ext = _ext(rng, (".png", ".tif", ".bmp"))
    return Img(_save(Image.fromarray(_u8(_texture(rng, h, w))).convert("1"), stem.with_suffix(ext)), OK, (h, w), "")


@kind("grey16", OK)
def _k_grey16(rng, stem, h, w):
    ext = _ext(rng, (".png", ".tif"))
    lo, hi = (7000, 9000) if rng.random() < 0.5 else (0, 65535)  # radiometric narrow band or full range
    return Img(_save(Image.fromarray(_u16(_texture(rng, h, w), lo, hi)), stem.with_suffix(ext)), OK, (h, w), "")


@kind("grey16-tiff-lzw-bigendian", OK)
def _k_grey16_lzw(rng, stem, h, w):
    a = _u16(_texture(rng, h, w), 1000, 60000)
    if rng.random() < 0.5:
        im = Image.fromarray(a.astype(">u2"))  # I;16B
    else:
        im = Image.fromarray(a)
    return Img(_save(im, stem.with_suffix(".tif"), compression=_ext(rng, ("tiff_lzw", "tiff_deflate", "packbits"))),
               OK, (h, w), "")


@kind("rgb16", OK)
def _k_rgb16(rng, stem, h, w):
    path = stem.with_suffix(_ext(rng, (".png", ".tif")))
    ok, buf = cv2.imencode(path.suffix, _u16(_rgb(rng, h, w)))
    path.write_bytes(buf.tobytes())
    return Img(path, OK, (h, w), "", True)


@kind("la16", OK)
def _k_la16(rng, stem, h, w):  # 16-bit grey + alpha PNG (colour type 4): neither Pillow nor OpenCV writes one
    a = np.stack([_u16(_texture(rng, h, w)), _u16(rng.random((h, w)))], -1).astype(">u2")
    rows = b"".join(b"\x00" + a[y].tobytes() for y in range(h))
    path = stem.with_suffix(".png")
    path.write_bytes(png_bytes(w, h, rows, bit_depth=16, colour_type=4))
    return Img(path, OK, (h, w), "")


@kind("float32-tiff", OK)
def _k_float(rng, stem, h, w):
    x = _texture(rng, h, w)
    if rng.random() < 0.5:  # outside [0, 1]: min-max normalised with a note
        x = x * float(rng.choice([1e-6, 300.0, 1e6])) - float(rng.choice([0.0, 50.0, 1e5]))
    return Img(_save(Image.fromarray(x.astype(np.float32), "F"), stem.with_suffix(".tif")), OK, (h, w), "")


@kind("float64-tiff", OK)
def _k_float64(rng, stem, h, w):
    path = stem.with_suffix(".tif")
    ok, buf = cv2.imencode(".tif", _texture(rng, h, w).astype(np.float64) * 40.0 - 3.0)
    path.write_bytes(buf.tobytes())
    return Img(path, OK, (h, w), "")


@kind("int32-tiff", OK)
def _k_int32(rng, stem, h, w):
    a = np.round(_texture(rng, h, w) * 200000 - 100000).astype(np.int32)
    return Img(_save(Image.fromarray(a, "I"), stem.with_suffix(".tif")), OK, (h, w), "")


@kind("constant", OK)
def _k_constant(rng, stem, h, w):
    which = int(rng.integers(4))
    if which == 0:
        im, ext = Image.fromarray(np.full((h, w), int(rng.choice([0, 1, 128, 255])), np.uint8)), ".png"
    elif which == 1:
        im, ext = Image.fromarray(np.full((h, w), int(rng.choice([0, 7000, 65535])), np.uint16)), ".tif"
    elif which == 2:
        value = float(rng.choice([0.0, 0.5, 1.0, -3.0, 1e9]))
        im, ext = Image.fromarray(np.full((h, w), value, np.float32), "F"), ".tif"
    else:
        im, ext = Image.fromarray(np.full((h, w, 3), int(rng.choice([0, 200, 255])), np.uint8)), ".jpg"
    return Img(_save(im, stem.with_suffix(ext)), OK, (h, w), "", which == 3)


@kind("min-size", OK)
def _k_min(rng, stem, h, w):
    h, w = (8, 8) if rng.random() < 0.5 else (8, int(rng.integers(8, 12)))
    if rng.random() < 0.5:
        h, w = w, h
    return Img(_save(Image.fromarray(_u8(_texture(rng, h, w))), stem.with_suffix(".png")), OK, (h, w), "")


@kind("elongated", OK)
def _k_elongated(rng, stem, h, w):
    short, long = int(rng.integers(8, 12)), int(rng.choice([300, 1000, 4000]))
    h, w = (short, long) if rng.random() < 0.5 else (long, short)
    return Img(_save(Image.fromarray(_u8(_texture(rng, h, w))), stem.with_suffix(_ext(rng, (".png", ".tif")))),
               OK, (h, w), "")


@kind("upper-case-ext", OK)
def _k_upper(rng, stem, h, w):
    ext = _ext(rng, (".PNG", ".JPG", ".JPEG", ".TIF", ".TIFF", ".BMP", ".Png"))
    return Img(_save(Image.fromarray(_u8(_texture(rng, h, w))), stem.with_suffix(ext)), OK, (h, w), "")


@kind("odd-ext", OK, folder=False)
def _k_odd_ext(rng, stem, h, w):
    name = stem.name + _ext(rng, (".dat", ".img", "", ".png.bak", ".raw"))
    path = stem.with_name(name)
    Image.fromarray(_u8(_texture(rng, h, w))).save(path, format=_ext(rng, ("PNG", "TIFF", "JPEG")))
    return Img(path, OK, (h, w), "")


@kind("wrong-ext", OK)
def _k_wrong_ext(rng, stem, h, w):  # JPEG bytes named .png, PNG bytes named .jpg...
    ext, fmt = [(".png", "JPEG"), (".jpg", "PNG"), (".tif", "PNG"), (".bmp", "TIFF")][int(rng.integers(4))]
    path = stem.with_suffix(ext)
    Image.fromarray(_u8(_texture(rng, h, w))).save(path, format=fmt)
    return Img(path, OK, (h, w), "")


@kind("multipage-tiff", OK)
def _k_multipage(rng, stem, h, w):
    pages = [Image.fromarray(_u8(_texture(rng, h, w)))] + [Image.fromarray(_u8(_texture(rng, h + 3, w + 5)))
                                                           for _ in range(int(rng.integers(1, 3)))]
    path = stem.with_suffix(".tif")
    pages[0].save(path, format="TIFF", save_all=True, append_images=pages[1:])
    return Img(path, OK, (h, w), "")


@kind("exif-rotated", OK)
def _k_exif(rng, stem, h, w):
    orientation = int(rng.integers(2, 9))
    transposed = orientation in (5, 6, 7, 8)
    stored = (w, h) if transposed else (h, w)
    im = Image.fromarray(_u8(_rgb(rng, *stored)))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return Img(_save(im, stem.with_suffix(".jpg"), exif=exif.tobytes()), OK, (h, w), "", True)


@kind("wide-integer-tiff", OK)
def _k_wide_int(rng, stem, h, w):  # signed 16-bit, unsigned 32-bit beyond 2**31, signed 16-bit RGB
    which = int(rng.integers(3))
    x = _texture(rng, h, w)
    if which == 0:
        data, bits, fmt, spp = np.round(x * 20000 - 10000).astype("<i2"), 16, 2, 1
    elif which == 1:
        data, bits, fmt, spp = np.round(x * 4.0e9).astype("<u4"), 32, 1, 1
    else:
        data, bits, fmt, spp = np.round(np.stack([x, x[::-1], 1 - x], -1) * 60000 - 30000).astype("<i2"), 16, 2, 3
    path = stem.with_suffix(".tif")
    path.write_bytes(tiff_bytes(w, h, data.tobytes(), bits=bits, sample_format=fmt, spp=spp))
    return Img(path, OK, (h, w), "", spp == 3)


@kind("other-formats", OK, folder=False)
def _k_other(rng, stem, h, w):  # what Pillow reads beyond the pairing extensions: 16-bit PGM, PPM, TGA, WebP, APNG
    ext = _ext(rng, (".pgm", ".ppm", ".tga", ".webp", ".apng.png", ".gif"))
    path = stem.with_name(stem.name + ext)
    if ext == ".pgm":
        Image.fromarray(_u16(_texture(rng, h, w))).save(path, format="PPM")
        return Img(path, OK, (h, w), "")
    frames = [Image.fromarray(_u8(_rgb(rng, h, w))) for _ in range(3)]
    fmt = {".ppm": "PPM", ".tga": "TGA", ".webp": "WEBP", ".apng.png": "PNG", ".gif": "GIF"}[ext]
    if ext in (".apng.png", ".gif"):
        frames[0].save(path, format=fmt, save_all=True, append_images=frames[1:])
    else:
        frames[0].save(path, format=fmt)
    return Img(path, OK, (h, w), "", True)


@kind("tiff-variants", OK)
def _k_tiff_variants(rng, stem, h, w):  # JPEG-in-TIFF, float RGB (OpenCV), tiled
    which = int(rng.integers(3))
    path = stem.with_suffix(".tif")
    if which == 0:
        _save(Image.fromarray(_u8(_rgb(rng, h, w))), path, compression="jpeg")
    elif which == 1:
        path.write_bytes(cv2.imencode(".tif", _rgb(rng, h, w) * 7.0 - 1.0)[1].tobytes())
    else:
        _save(Image.fromarray(_u8(_texture(rng, h, w))), path, tiffinfo={322: 16, 323: 16}, compression="tiff_lzw")
    return Img(path, OK, (h, w), "", which in (0, 1))


@kind("unusual-sample-formats", EITHER)
def _k_unusual(rng, stem, h, w):  # float16 TIFF, CIELAB TIFF: read, or one clear "unsupported" error
    path = stem.with_suffix(".tif")
    if rng.random() < 0.5:
        path.write_bytes(tiff_bytes(w, h, _texture(rng, h, w).astype("<f2").tobytes(), bits=16, sample_format=3))
        return Img(path, EITHER, (h, w), "")
    _save(Image.fromarray(_u8(_rgb(rng, h, w))).convert("LAB"), path)
    return Img(path, EITHER, (h, w), "", True)


# ---- broken: must be one clear error naming the file
@kind("random-bytes", USER_ERROR)
def _k_random(rng, stem, h, w):
    path = stem.with_suffix(_ext(rng, (".png", ".jpg", ".tif", ".bmp", ".JPG", ".tiff", ".jpeg")))
    path.write_bytes(rng.bytes(int(rng.integers(1, 4000))))
    return Img(path, USER_ERROR, None, "")


@kind("magic-then-garbage", USER_ERROR)
def _k_magic(rng, stem, h, w):
    magic, ext = [(b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff\xe0", ".jpg"), (b"II*\x00", ".tif"),
                  (b"MM\x00*", ".tif"), (b"BM", ".bmp"), (b"GIF89a", ".png"), (b"RIFF\x00\x00\x00\x00WEBP", ".png"),
                  (b"II*\x00\x08\x00\x00\x00", ".tif")][int(rng.integers(8))]
    path = stem.with_suffix(ext)
    path.write_bytes(magic + rng.bytes(int(rng.integers(0, 3000))))
    return Img(path, USER_ERROR, None, "")


@kind("text-as-image", USER_ERROR)
def _k_text(rng, stem, h, w):
    path = stem.with_suffix(_ext(rng, (".png", ".jpg", ".tif")))
    path.write_text(_ext(rng, ("<html><body>404 Not Found</body></html>\n", "version https://git-lfs.github.com/"
                               "spec/v1\noid sha256:abc\nsize 12345\n", "\n", "P5\n")))
    return Img(path, USER_ERROR, None, "")


def _valid_bytes(rng, h, w, fmt: str, colour: bool | None = None) -> bytes:
    buf = _io.BytesIO()
    colour = rng.random() < 0.5 if colour is None else colour
    a = _u8(_rgb(rng, h, w)) if colour else _u8(_texture(rng, h, w))
    Image.fromarray(a).save(buf, format=fmt)
    return buf.getvalue()


@kind("truncated", USER_ERROR)
def _k_truncated(rng, stem, h, w):
    ext, fmt = [(".png", "PNG"), (".jpg", "JPEG"), (".tif", "TIFF"), (".bmp", "BMP"), (".png", "PNG16"),
                (".tif", "TIFF16")][int(rng.integers(6))]
    if fmt.endswith("16"):  # 16-bit colour: Pillow opens it, OpenCV decodes it
        data = cv2.imencode(ext, _u16(_rgb(rng, max(h, 16), max(w, 16))))[1].tobytes()
    else:
        data = _valid_bytes(rng, max(h, 16), max(w, 16), fmt)
    path = stem.with_suffix(ext)
    path.write_bytes(data[: max(1, int(len(data) * rng.uniform(0.02, 0.8)))])
    return Img(path, USER_ERROR, None, "")


@kind("empty-or-header-only", USER_ERROR)
def _k_empty(rng, stem, h, w):
    ext, fmt = [(".png", "PNG"), (".jpg", "JPEG"), (".tif", "TIFF"), (".bmp", "BMP")][int(rng.integers(4))]
    path = stem.with_suffix(ext)
    data = _valid_bytes(rng, 16, 16, fmt)
    path.write_bytes(b"" if rng.random() < 0.4 else data[: int(rng.integers(1, 40))])
    return Img(path, USER_ERROR, None, "")


@kind("zero-pixels", USER_ERROR)
def _k_zero(rng, stem, h, w):
    which = int(rng.integers(5))
    zw, zh = [(0, 0), (0, 16), (16, 0)][int(rng.integers(3))]
    if which == 0:
        path = stem.with_suffix(".png")
        path.write_bytes(png_bytes(zw, zh, b""))
    elif which == 1:
        path = stem.with_suffix(".tif")
        path.write_bytes(tiff_bytes(zw, zh, b""))
    elif which == 2:  # a real JPEG whose frame header says 0 lines or 0 columns
        data = bytearray(_valid_bytes(rng, 16, 16, "JPEG"))
        sof = data.find(b"\xff\xc0")
        data[sof + 5: sof + 9] = struct.pack(">HH", zh, zw)
        path = stem.with_suffix(".jpg")
        path.write_bytes(bytes(data))
    elif which == 3:  # BMP header with width or height 0
        data = bytearray(_valid_bytes(rng, 16, 16, "BMP"))
        data[18:26] = struct.pack("<ii", zw, zh)
        path = stem.with_suffix(".bmp")
        path.write_bytes(bytes(data))
    else:  # TIFF of 0 rows written by Pillow is impossible: a 16-bit one by hand
        path = stem.with_suffix(".tiff")
        path.write_bytes(tiff_bytes(zw, zh, b"", bits=16))
    return Img(path, USER_ERROR, None, "")


@kind("too-small", USER_ERROR)
def _k_small(rng, stem, h, w):
    h, w = [(1, 1), (1, 40), (40, 1), (2, 4000), (4000, 2), (7, 7), (8, 7), (3, 3)][int(rng.integers(8))]
    a = _u8(_texture(rng, h, w)) if min(h, w) > 1 else _u8(rng.random((h, w)))
    return Img(_save(Image.fromarray(a), stem.with_suffix(_ext(rng, (".png", ".tif", ".bmp", ".jpg")))),
               USER_ERROR, None, "")


@kind("nan-inf-float-tiff", USER_ERROR)
def _k_nan(rng, stem, h, w):
    x = _texture(rng, h, w).astype(np.float32)
    bad = [np.nan, np.inf, -np.inf][int(rng.integers(3))]
    idx = rng.integers(0, x.size, size=int(rng.integers(1, max(2, x.size // 4))))
    x.flat[idx] = bad
    path = stem.with_suffix(".tif")
    if rng.random() < 0.7:
        Image.fromarray(x, "F").save(path, format="TIFF")
    else:  # float64, which only OpenCV decodes
        path.write_bytes(cv2.imencode(".tif", x.astype(np.float64))[1].tobytes())
    return Img(path, USER_ERROR, None, "")


@kind("huge-header", USER_ERROR)
def _k_huge(rng, stem, h, w):
    side = int(rng.choice([100_000, 1 << 20, 0x7FFFFFFF]))
    path = stem.with_suffix(".png")
    path.write_bytes(png_bytes(side, side if rng.random() < 0.5 else 16, rng.bytes(64)))
    return Img(path, USER_ERROR, None, "")


@kind("directory", USER_ERROR, folder=False)
def _k_dir(rng, stem, h, w):
    path = stem.with_suffix(_ext(rng, (".png", ".jpg", "")))
    path.mkdir()
    return Img(path, USER_ERROR, None, "")


@kind("dangling-symlink", USER_ERROR, folder=False)
def _k_symlink(rng, stem, h, w):
    path = stem.with_suffix(".png")
    os.symlink(stem.with_name("gone.png") if rng.random() < 0.5 else path, path)  # dangling, or a loop
    return Img(path, USER_ERROR, None, "")


@kind("missing", USER_ERROR, folder=False)
def _k_missing(rng, stem, h, w):
    return Img(stem.with_suffix(_ext(rng, (".png", ".jpg", ".tif"))), USER_ERROR, None, "")


# ---- damaged in a way a decoder may or may not notice: either outcome, never a crash
@kind("bit-flips", EITHER)
def _k_flips(rng, stem, h, w):
    ext, fmt = [(".png", "PNG"), (".jpg", "JPEG"), (".tif", "TIFF"), (".bmp", "BMP")][int(rng.integers(4))]
    colour = bool(rng.random() < 0.5)
    data = bytearray(_valid_bytes(rng, max(h, 16), max(w, 16), fmt, colour))
    for _ in range(int(rng.integers(1, 12))):
        i = int(rng.integers(8, len(data)))
        data[i] ^= 1 << int(rng.integers(8))
    path = stem.with_suffix(ext)
    path.write_bytes(bytes(data))
    return Img(path, EITHER, (max(h, 16), max(w, 16)), "", colour)


GOOD_KINDS = [k for k, (_, s, _) in IMAGE_KINDS.items() if s == OK]
BAD_KINDS = [k for k, (_, s, _) in IMAGE_KINDS.items() if s == USER_ERROR]
ALL_KINDS = list(IMAGE_KINDS)
FOLDER_BAD_KINDS = [k for k in BAD_KINDS if IMAGE_KINDS[k][2]]
FOLDER_GOOD_KINDS = [k for k in GOOD_KINDS if IMAGE_KINDS[k][2]]
# what the default pipeline gets: small and odd but valid
DEFAULT_PIPELINE_KINDS = ["palette-png", "cmyk", "la-png", "1-bit", "grey16", "float32-tiff", "constant", "min-size",
                          "rgba", "rgb16", "exif-rotated", "int32-tiff"]


def _size(rng: np.random.Generator, lo: int = 8, hi: int = 72) -> tuple[int, int]:
    return int(rng.integers(lo, hi)), int(rng.integers(lo, hi))


def _good(ctx: Ctx, name: str, shape: tuple[int, int], kinds=("grey8", "rgb8")) -> Img:
    return make_image(kinds[int(ctx.rng.integers(len(kinds)))], ctx.rng, ctx.path(name), *shape)


def _model(ctx: Ctx) -> list[str]:
    return ["--model", CHEAP]


def _outcome(*imgs: Img) -> tuple[str, tuple[str, ...]]:
    """Expected status of a run that reads ``imgs`` in order: the first bad one is the error."""
    bad = [i for i in imgs if i.status == USER_ERROR]
    if bad:  # an earlier file that may or may not be readable may be the one named
        return USER_ERROR, tuple(str(i.path) for i in imgs if i.status in (USER_ERROR, EITHER))
    if any(i.status == EITHER for i in imgs):
        return EITHER, tuple(str(i.path) for i in imgs if i.status == EITHER)
    return OK, ()


def _single(ctx: Ctx, verb: str, ir: Img, vis: Img, extra: list[str] | None = None, model: list[str] | None = None,
            note: str = "") -> Case:
    """``fuse``/``register`` on one pair; the output on the visible grid."""
    status, names = _outcome(ir, vis)
    out_ext = ".png"
    opts: list[str] = []
    if ctx.rng.random() < 0.25:
        opts += ["--bit-depth", "16"]
        out_ext = _ext(ctx.rng, (".png", ".tif"))
    if ctx.rng.random() < 0.3:
        opts += ["--ir-norm", _ext(ctx.rng, ("percentile", "minmax", "fixed"))]
    out = ctx.path("out" + out_ext)
    verbose = verb == "register" and ctx.rng.random() < 0.4
    if verbose:
        opts.append("-v")
    argv = [verb, str(ir.path), str(vis.path), "-o", str(out)] + opts + (model or _model(ctx)) + (extra or [])
    field_out = None
    if verb == "register" or ctx.rng.random() < 0.3:
        field_out = str(ctx.path("field.npy"))
        argv += ["--field", field_out]
    shape = vis.shape if status == OK else None
    return Case("", 0, argv, status, names, outputs={str(out): shape} if status != USER_ERROR else {},
                absent=(str(out), str(ctx.path("field.npy"))) if status == USER_ERROR else (),
                field_out=field_out, field_shape=(2, *vis.shape) if (status == OK and vis.shape) else None,
                json_last_line=verbose, note=note or f"{verb} ir={ir.kind} vis={vis.kind}")


# ------------------------------------------------------------------------------------------- families
@family("fuse-odd-ir", "fuse IR VIS -o OUT with an odd or broken IR (every image kind in turn)")
def _f_fuse_ir(ctx: Ctx) -> Case:
    shape = _size(ctx.rng)
    ir = make_image(ctx.pick(ALL_KINDS), ctx.rng, ctx.path("ir"), *shape)
    return _single(ctx, "fuse", ir, _good(ctx, "vis", _size(ctx.rng)))


@family("fuse-odd-vis", "fuse IR VIS -o OUT with an odd or broken VIS (every image kind in turn)")
def _f_fuse_vis(ctx: Ctx) -> Case:
    vis = make_image(ctx.pick(ALL_KINDS, 7), ctx.rng, ctx.path("vis"), *_size(ctx.rng))
    return _single(ctx, "fuse", _good(ctx, "ir", vis.shape or _size(ctx.rng)), vis)


@family("fuse-odd-both", "fuse with both images drawn from every kind (the IR is read first)")
def _f_fuse_both(ctx: Ctx) -> Case:
    ir = make_image(ctx.pick(ALL_KINDS, 13), ctx.rng, ctx.path("ir"), *_size(ctx.rng))
    vis = make_image(ALL_KINDS[int(ctx.rng.integers(len(ALL_KINDS)))], ctx.rng, ctx.path("vis"), *_size(ctx.rng))
    return _single(ctx, "fuse", ir, vis)


@family("register-odd", "register IR VIS -o OUT --field F.npy with an odd or broken IR or VIS")
def _f_register(ctx: Ctx) -> Case:
    odd = make_image(ctx.pick(ALL_KINDS, 19), ctx.rng, ctx.path("odd"), *_size(ctx.rng))
    other = _good(ctx, "other", odd.shape or _size(ctx.rng))
    ir, vis = (odd, other) if ctx.turn % 2 == 0 else (other, odd)
    return _single(ctx, "register", ir, vis)


@family("metrics-odd", "metrics --ir --vis --fused [--json] with one odd or broken image")
def _f_metrics(ctx: Ctx) -> Case:
    odd = make_image(ctx.pick(ALL_KINDS, 29), ctx.rng, ctx.path("odd"), *_size(ctx.rng))
    shape = odd.shape or _size(ctx.rng)
    role = ["--ir", "--vis", "--fused"][ctx.turn % 3]
    imgs = {role: odd}
    if "--vis" not in imgs:
        imgs["--vis"] = _good(ctx, "vis", shape)
    if "--fused" not in imgs:  # a colour visible image gives a colour fused one (as `fuse` writes it)
        imgs["--fused"] = _good(ctx, "fused", shape, ("rgb8",) if imgs["--vis"].colour else ("grey8", "rgb8"))
    if "--ir" not in imgs:
        imgs["--ir"] = _good(ctx, "ir", shape)
    vis, ir, fused = imgs["--vis"], imgs["--ir"], imgs["--fused"]
    status, names = _outcome(vis, ir, fused)  # the order cmd_metrics reads them
    if status != USER_ERROR and vis.colour and not fused.colour:  # VIFB's colour rule has no grey-vs-colour case
        status, names = USER_ERROR, (str(fused.path),)
    argv = ["metrics"] + [a for r in ("--ir", "--vis", "--fused") for a in (r, str(imgs[r].path))]
    as_json = ctx.rng.random() < 0.6
    if as_json:
        argv.append("--json")
    if ctx.rng.random() < 0.3:
        argv += ["--names", ",".join(ctx.rng.choice(["Entropy", "Qabf", "Ssim", "Mutinf", "Qcb", "VIFF", "Psnr"],
                                                    size=2, replace=False))]
    return Case("", 0, argv, status, names, json_out=as_json, note=f"metrics {role}={odd.kind}")


@family("metrics-mismatch", "metrics with images of different sizes, a grey fused image of a colour visible one, "
        "or an unknown --names entry")
def _f_metrics_mismatch(ctx: Ctx) -> Case:
    shape = _size(ctx.rng, 16)
    kinds = ctx.pick([("grey8",), ("rgb8",)], ctx.turn // 5)
    imgs = {r: _good(ctx, r, shape, kinds) for r in ("ir", "vis", "fused")}
    variant = ctx.pick(["ir", "fused", "vis", "names", "grey-fused"])
    argv = ["metrics", "--ir", str(imgs["ir"].path), "--vis", str(imgs["vis"].path), "--fused", str(imgs["fused"].path)]
    if variant == "names":
        argv += ["--names", "Entropy,NoSuchMetric"]
        return Case("", 0, argv, USER_ERROR, ("NoSuchMetric",), note="metrics unknown --names")
    if variant == "grey-fused":
        vis, fused = _good(ctx, "vis_colour", shape, ("rgb8",)), _good(ctx, "fused_grey", shape, ("grey8",))
        argv[4], argv[6] = str(vis.path), str(fused.path)
        return Case("", 0, argv, USER_ERROR, (str(fused.path),), note="metrics grey fused, colour visible")
    other = (shape[0] + int(ctx.rng.integers(1, 9)), shape[1]) if ctx.rng.random() < 0.5 else (shape[1], shape[0] + 1)
    imgs[variant] = _good(ctx, variant + "_other", other, kinds)
    argv[argv.index("--" + variant) + 1] = str(imgs[variant].path)
    return Case("", 0, argv, USER_ERROR, (str(imgs[variant].path),), note=f"metrics {variant} of another size")


@family("pair-sizes-differ", "fuse/register an IR and a VIS of different sizes and aspect ratios (must work)")
def _f_sizes(ctx: Ctx) -> Case:
    shapes = [((64, 80), (48, 64)), ((8, 8), (60, 90)), ((90, 60), (8, 40)), ((10, 300), (40, 40)),
              ((40, 40), (300, 9)), ((33, 17), (17, 33)), ((64, 64), (8, 8))]
    si, sv = ctx.pick(shapes)
    ir = make_image(ctx.pick(GOOD_KINDS, 3), ctx.rng, ctx.path("ir"), *si)
    vis = make_image(ctx.pick(["grey8", "rgb8", "palette-png", "grey16"], 1), ctx.rng, ctx.path("vis"), *sv)
    if ctx.turn % 5 == 4:  # the same file as IR and VIS
        vis = ir
    return _single(ctx, ctx.pick(["fuse", "register"]), ir, vis, extra=["--resize-ir"] if ctx.turn % 4 == 1 else [])


def _unwritable_dir(ctx: Ctx) -> tuple[Path, list[Path]]:
    """A folder the run cannot write into: read-only for a normal user; for root (who writes anywhere) a path
    under a regular file."""
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        d = ctx.path("readonly")
        d.mkdir()
        d.chmod(0o555)
        return d, [d]
    blocker = ctx.path("a_file")
    blocker.write_text("x")
    return blocker / "sub", []


@family("output-paths", "fuse/register with odd -o/--aligned-ir paths: missing folder, unwritable, = input, "
        "a folder, bad extension, 16-bit JPEG, upper-case extension")
def _f_outputs(ctx: Ctx) -> Case:
    shape = _size(ctx.rng, 16)
    ir, vis = _good(ctx, "ir", shape), _good(ctx, "vis", shape)
    verb = ctx.pick(["fuse", "register"], ctx.turn // 13)
    base = [verb, str(ir.path), str(vis.path)]
    variant = ctx.pick(["missing-folder", "unwritable", "parent-is-file", "out-is-ir", "out-is-vis",
                        "aligned-is-out", "aligned-is-vis", "out-is-folder", "bad-ext", "sixteen-bit-jpeg",
                        "upper-ext", "overwrite-output", "unicode-name", "symlink-to-input", "dangling-symlink"])
    extra: list[str] = []
    out = ctx.path("out.png")
    restore: list[Path] = []
    status, names = USER_ERROR, ()
    if variant == "missing-folder":
        out, status = ctx.path("new/deeper/out.png"), OK
    elif variant == "unwritable":
        d, restore = _unwritable_dir(ctx)
        out, names = d / "out.png", (str(d / "out.png"), str(d), str(d.parent))
    elif variant == "parent-is-file":
        (ctx.path("blocker.png")).write_text("not a folder")
        out, names = ctx.path("blocker.png") / "out.png", (str(ctx.path("blocker.png")),)
    elif variant == "out-is-ir":
        out, names = ir.path, (str(ir.path),)
    elif variant == "out-is-vis":
        out, names = vis.path, (str(vis.path),)
    elif variant == "aligned-is-out":
        if verb == "register":
            extra, status = ["--field", str(ctx.path("out.png"))], OK  # written as out.png.npy: allowed
        else:
            extra, names = ["--aligned-ir", str(out)], (str(out),)
    elif variant == "aligned-is-vis":
        if verb == "register":
            out, names = ir.path, (str(ir.path),)
        else:
            extra, names = ["--aligned-ir", str(vis.path)], (str(vis.path),)
    elif variant == "out-is-folder":
        out = ctx.path("folder.png")
        out.mkdir()
        names = (str(out),)
    elif variant == "bad-ext":
        out = ctx.path("out" + _ext(ctx.rng, (".gif", ".txt", "", ".npy", ".webp", ".png.")))
        names = (str(out),)
    elif variant == "sixteen-bit-jpeg":
        out = ctx.path("out" + _ext(ctx.rng, (".jpg", ".bmp", ".JPEG")))
        extra, names = ["--bit-depth", "16"], (str(out),)
    elif variant == "upper-ext":
        out, status = ctx.path("out" + _ext(ctx.rng, (".PNG", ".JPG", ".TIF", ".Jpeg", ".BMP"))), OK
    elif variant == "overwrite-output":
        out.write_bytes(b"old output")
        status = OK
    elif variant == "unicode-name":
        out, status = ctx.path("sortie fusionnée été.png"), OK
    elif variant == "symlink-to-input":  # writing through the link would replace the input
        os.symlink(vis.path, out)
        names = (str(out), str(vis.path))
    elif variant == "dangling-symlink":  # the link itself is replaced by the output
        os.symlink(ctx.path("nowhere/gone.png"), out)
        status = OK
    argv = base + ["-o", str(out)] + extra + _model(ctx)
    case = Case("", 0, argv, status, names, outputs={str(out): vis.shape} if status == OK else {},
                absent=(str(out),) if status == USER_ERROR and variant not in ("out-is-ir", "out-is-vis",
                                                                               "aligned-is-vis", "out-is-folder",
                                                                               "symlink-to-input")
                else (), note=f"{verb} output {variant}", restore=restore)

    if variant == "aligned-is-out" and verb == "fuse":
        case.absent = (str(out),)
    return case


@family("field-paths", "register/fuse --field of odd forms: no .npy, .NPY, a folder, a missing folder, under a file, "
        "empty, the output's name")
def _f_fields(ctx: Ctx) -> Case:
    shape = _size(ctx.rng, 16)
    ir, vis = _good(ctx, "ir", shape), _good(ctx, "vis", shape)
    verb = ctx.pick(["register", "fuse"], ctx.turn // 9)
    out = ctx.path("out.png")
    variant = ctx.pick(["no-npy", "upper-npy", "existing-folder-name", "npy-is-folder", "missing-folder",
                        "under-a-file", "empty", "same-as-output", "is-input-name"])
    status, names, field_arg = OK, (), ""
    absent: tuple[str, ...] = ()
    if variant == "no-npy":
        field_arg = str(ctx.path("displacement"))
    elif variant == "upper-npy":
        field_arg = str(ctx.path("F.NPY"))
    elif variant == "existing-folder-name":  # a folder "fields" exists: the field goes to fields.npy beside it
        ctx.path("fields").mkdir()
        field_arg = str(ctx.path("fields"))
    elif variant == "npy-is-folder":
        ctx.path("f.npy").mkdir()
        field_arg, status, names, absent = str(ctx.path("f.npy")), USER_ERROR, (str(ctx.path("f.npy")),), (str(out),)
    elif variant == "missing-folder":
        field_arg = str(ctx.path("a/b/f.npy"))
    elif variant == "under-a-file":
        ctx.path("plain").write_text("x")
        field_arg, status = str(ctx.path("plain") / "f.npy"), USER_ERROR
        names, absent = (str(ctx.path("plain")),), (str(out),)
    elif variant == "empty":
        field_arg, status, names, absent = "", USER_ERROR, ("--field",), (str(out),)
    elif variant == "same-as-output":
        field_arg = str(out)  # written as out.png.npy
    elif variant == "is-input-name":
        field_arg = str(ir.path)  # written as ir.png.npy: not the input
    argv = [verb, str(ir.path), str(vis.path), "-o", str(out), "--field", field_arg] + _model(ctx)
    return Case("", 0, argv, status, names, outputs={str(out): vis.shape} if status == OK else {}, absent=absent,
                field_out=field_arg if status == OK else None, field_shape=(2, *vis.shape),
                note=f"{verb} --field {variant}")


def _folder_pairs(ctx: Ctx, ir_dir: Path, vis_dir: Path, n_good: int, n_bad: int) -> tuple[list[str], list[str],
                                                                                          dict[str, tuple]]:
    good, bad, shapes = [], [], {}
    for i in range(n_good):
        stem = f"good{i}"
        shape = _size(ctx.rng, 8, 48)
        k_ir = ctx.pick(FOLDER_GOOD_KINDS, 5 * i) if ctx.rng.random() < 0.6 else "grey8"
        ir = make_image(k_ir, ctx.rng, ir_dir / stem, *shape)
        vis = make_image(ctx.pick(FOLDER_GOOD_KINDS, 5 * i + 2) if ctx.rng.random() < 0.4 else "rgb8", ctx.rng,
                         vis_dir / stem, *_size(ctx.rng, 8, 48))
        good.append(stem)
        shapes[stem] = vis.shape
    for i in range(n_bad):
        stem = f"bad{i}"
        k = ctx.pick(FOLDER_BAD_KINDS, 3 * i)
        if ctx.rng.random() < 0.5:
            make_image(k, ctx.rng, ir_dir / stem, 32, 32)
            _good(ctx, "x", (32, 32)).path.rename(vis_dir / f"{stem}.png")
        else:
            _good(ctx, "x", (32, 32)).path.rename(ir_dir / f"{stem}.png")
            make_image(k, ctx.rng, vis_dir / stem, 32, 32)
        bad.append(stem)
    return good, bad, shapes


@family("folder-mixed", "fuse --ir-dir --vis-dir -o DIR mixing good pairs, broken pairs, unpaired and stray files")
def _f_folder(ctx: Ctx) -> Case:
    ir_dir, vis_dir, out_dir = ctx.path("ir"), ctx.path("vi"), ctx.path("out")
    ir_dir.mkdir()
    vis_dir.mkdir()
    n_good, n_bad = int(ctx.rng.integers(1, 4)), int(ctx.rng.integers(0, 3)) if ctx.turn % 4 else 0
    good, bad, shapes = _folder_pairs(ctx, ir_dir, vis_dir, n_good, n_bad)
    unpaired: list[str] = []
    extras = ctx.rng.random(6)
    if extras[0] < 0.4:  # an IR without a visible counterpart
        _good(ctx, "x", (16, 16)).path.rename(ir_dir / "lonely.png")
        unpaired.append("lonely")
    if extras[1] < 0.3:  # the same stem twice on one side
        _good(ctx, "x", (16, 16)).path.rename(ir_dir / "dup.png")
        _good(ctx, "x", (16, 16)).path.rename(ir_dir / "dup.tif")
        _good(ctx, "x", (16, 16)).path.rename(vis_dir / "dup.png")
        unpaired.append("dup")
    if extras[2] < 0.4:  # files that are not images, hidden files, a sub-folder with an image name: ignored
        (ir_dir / "notes.txt").write_text("calibration notes")
        (vis_dir / ".DS_Store").write_bytes(b"\x00\x01junk")
        (ir_dir / "sub.png").mkdir()
    if extras[3] < 0.3:  # stems differing only in case
        _good(ctx, "x", (16, 16)).path.rename(ir_dir / "Case.png")
        _good(ctx, "x", (16, 16)).path.rename(vis_dir / "case.png")
        unpaired += ["Case", "case"]
    ext = ctx.pick(["png", ".jpg", "tif", "PNG", "bmp"])
    argv = ["fuse", "--ir-dir", str(ir_dir), "--vis-dir", str(vis_dir), "-o", str(out_dir)] + _model(ctx)
    if ext != "png":
        argv += ["--ext", ext]
    save_field = extras[4] < 0.3
    if save_field:
        argv.append("--save-field")
    if extras[5] < 0.3:
        argv.append("--save-aligned")
    e = ext.lstrip(".")
    outputs = {str(out_dir / f"{s}.{e}"): shapes[s] for s in good}
    if save_field:
        outputs.update({str(out_dir / "field" / f"{s}.npy"): None for s in good})
    absent = tuple(str(out_dir / f"{s}.{e}") for s in bad + unpaired)
    return Case("", 0, argv, BATCH, outputs=outputs, absent=absent, failed=tuple(bad) + tuple(unpaired),
                code=1 if (bad or unpaired) else 0, note=f"folder {len(good)} good, {len(bad)} bad, "
                f"{len(unpaired)} unpaired")


@family("folder-errors", "folder mode that cannot start: missing folder, a file as folder, no pairs, bad -o, "
        "bad --ext, missing or empty --split, half of the options")
def _f_folder_errors(ctx: Ctx) -> Case:
    ir_dir, vis_dir, out_dir = ctx.path("ir"), ctx.path("vi"), ctx.path("out")
    ir_dir.mkdir()
    vis_dir.mkdir()
    _good(ctx, "x", (16, 16)).path.rename(ir_dir / "a.png")
    _good(ctx, "x", (16, 16)).path.rename(vis_dir / "a.png")
    variant = ctx.pick(["ir-missing", "vis-is-file", "no-pairs", "out-is-file", "out-is-ir", "bad-ext", "split-missing",
                        "split-unknown-name", "only-ir-dir", "files-and-dirs", "sixteen-bit-ext", "split-empty"])
    argv = ["fuse", "--ir-dir", str(ir_dir), "--vis-dir", str(vis_dir), "-o", str(out_dir)] + _model(ctx)
    names: tuple[str, ...] = ()
    if variant == "ir-missing":
        argv[2] = str(ctx.path("nope"))
        names = (argv[2],)
    elif variant == "vis-is-file":
        argv[4] = str(vis_dir / "a.png")
        names = (argv[4],)
    elif variant == "no-pairs":
        (vis_dir / "a.png").rename(vis_dir / "b.png")
        names = (str(ir_dir), str(vis_dir))
    elif variant == "out-is-file":
        ctx.path("o.png").write_bytes(b"x")
        argv[6] = str(ctx.path("o.png"))
        names = (argv[6],)
    elif variant == "out-is-ir":
        argv[6] = str(ir_dir)
        names = (str(ir_dir),)
    elif variant == "bad-ext":
        argv += ["--ext", _ext(ctx.rng, ("gif", "", "npy", ".txt"))]
        names = (str(out_dir),)
    elif variant == "sixteen-bit-ext":
        argv += ["--ext", "jpg", "--bit-depth", "16"]
        names = (str(out_dir),)
    elif variant == "split-missing":
        argv += ["--split", str(ctx.path("names.txt"))]
        names = (argv[-1],)
    elif variant == "split-empty":
        ctx.path("names.txt").write_text("# nothing\n\n")
        argv += ["--split", str(ctx.path("names.txt"))]
        names = (str(ir_dir), str(vis_dir))
    elif variant == "split-unknown-name":
        ctx.path("names.txt").write_bytes(b"\xef\xbb\xbfa.png\nghost\n")
        argv += ["--split", str(ctx.path("names.txt"))]
        return Case("", 0, argv, BATCH, outputs={str(out_dir / "a.png"): (16, 16)}, failed=("ghost",), code=1,
                    note="folder --split with an unknown name")
    elif variant == "only-ir-dir":
        argv = ["fuse", "--ir-dir", str(ir_dir), "-o", str(out_dir)] + _model(ctx)
        names = ("--vis-dir",)
    elif variant == "files-and-dirs":
        argv = ["fuse", str(ir_dir / "a.png"), str(vis_dir / "a.png")] + argv[1:]
        names = ("--ir-dir",)
    return Case("", 0, argv, USER_ERROR, names, absent=(str(out_dir / "a.png"),), note=f"folder {variant}")


@family("default-pipeline", "fuse/register with the default pipeline on tiny odd but valid images", slow=True)
def _f_default(ctx: Ctx) -> Case:
    kind_ir = ctx.pick(DEFAULT_PIPELINE_KINDS)
    kind_vis = ctx.pick(DEFAULT_PIPELINE_KINDS + ["grey8", "rgb8"], 5)
    ir = make_image(kind_ir, ctx.rng, ctx.path("ir"), *_size(ctx.rng, 8, 40))
    vis = make_image(kind_vis, ctx.rng, ctx.path("vis"), *_size(ctx.rng, 8, 40))
    strict = ctx.turn % 3 == 2
    case = _single(ctx, ctx.pick(["fuse", "register"], ctx.turn // 12), ir, vis, model=["--model", "default"],
                   extra=["--strict"] if strict else [],
                   note=f"default pipeline ir={kind_ir} vis={kind_vis}" + (" --strict" if strict else ""))
    if strict and case.expect == OK:  # a suspect registration of tiny odd images is a user error naming the IR
        case.expect, case.names = EITHER, (str(ir.path),)
    return case


CHEAP_MODELS = ["phase+average", "identity+max", "identity+laplacian", "identity+gff", "phase+laplacian"]


@family("classical-odd-sizes", "cheap classical registrars/fusers (phase, laplacian, gff, max) on min-size, "
        "elongated and constant images")
def _f_classical(ctx: Ctx) -> Case:
    kinds = ["min-size", "elongated", "constant", "grey8", "1-bit"]
    ki = ctx.pick(kinds)
    ir = make_image(ki, ctx.rng, ctx.path("ir"), *_size(ctx.rng, 8, 24))
    vis_kind = ctx.pick(kinds, ctx.turn // len(kinds) + 1)
    shape = ir.shape if ctx.rng.random() < 0.6 else _size(ctx.rng, 8, 24)
    vis = make_image(vis_kind, ctx.rng, ctx.path("vis"), *shape)
    model = ctx.pick(CHEAP_MODELS, ctx.turn // 5)
    return _single(ctx, "fuse", ir, vis, model=["--model", model], note=f"{model} ir={ki} vis={vis_kind}")


# ---------------------------------------------------------------- rig JSON and video
#: A well-formed rig file (``alignfuse calibrate``'s format), which the corrupt variants below break.
VALID_RIG = {"format": "alignfuse-rig/1", "ir_size": [640, 512], "vis_size": [640, 480],
             "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]}

RIG_VARIANTS = ["random-bytes", "empty", "truncated", "not-an-object", "missing-key", "wrong-type", "nan", "infinity",
                "huge-number", "wrong-shape", "ragged", "singular", "invalid-utf8", "directory", "missing",
                "deep-nesting"]


def corrupt_rig_json(rng: np.random.Generator, path: Path, variant: str | None = None) -> tuple[Path, str]:
    """Write a broken rig JSON at ``path`` (or a folder / nothing there); returns (path, variant). Every variant
    must be a user error naming the file."""
    variant = variant or RIG_VARIANTS[int(rng.integers(len(RIG_VARIANTS)))]
    rig = json.loads(json.dumps(VALID_RIG))
    text: str | bytes
    if variant == "random-bytes":
        text = rng.bytes(int(rng.integers(1, 500)))
    elif variant == "empty":
        text = b""
    elif variant == "truncated":
        full = json.dumps(rig, indent=1)
        text = full[: int(rng.integers(1, len(full) - 1))]
    elif variant == "not-an-object":
        text = json.dumps([rig["matrix"]] if rng.random() < 0.5 else "matrix")
    elif variant == "missing-key":
        rig.pop(sorted(rig)[int(rng.integers(len(rig)))])
        text = json.dumps(rig)
    elif variant == "wrong-type":
        key = sorted(rig)[int(rng.integers(len(rig)))]
        rig[key] = ["a string", None, {"x": 1}, True][int(rng.integers(4))]
        text = json.dumps(rig)
    elif variant in ("nan", "infinity"):  # Python's json reads these literals unless told not to
        text = json.dumps(rig).replace("0.0]", ("NaN" if variant == "nan" else "-Infinity") + "]", 1)
    elif variant == "huge-number":
        text = json.dumps(rig).replace("1.0", "1e999", 1)
    elif variant == "wrong-shape":
        rig["matrix"] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]] if rng.random() < 0.5 else [[1.0] * 4] * 4
        text = json.dumps(rig)
    elif variant == "ragged":
        rig["matrix"] = [[1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        text = json.dumps(rig)
    elif variant == "singular":
        rig["matrix"] = [[0.0] * 3] * 3
        text = json.dumps(rig)
    elif variant == "invalid-utf8":  # a Latin-1 byte inside a string: not UTF-8, so not JSON
        text = json.dumps(rig).replace('"ir_size"', '"ir_size\udcff"', 1).encode("utf-8", "surrogateescape")
    elif variant == "deep-nesting":
        text = "[" * 100_000 + "]" * 100_000
    elif variant == "directory":
        path.mkdir()
        return path, variant
    else:  # missing
        return path, variant
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    return path, variant


VIDEO_VARIANTS = ["random-bytes", "empty", "truncated", "image-renamed", "header-then-garbage", "zero-frames",
                  "directory", "missing"]


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> bool:
    """Write (H, W) or (H, W, 3) uint8 frames with OpenCV (mp4v); False when this OpenCV cannot."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        return False
    for f in frames:
        writer.write(f if f.ndim == 3 else np.repeat(f[:, :, None], 3, 2))
    writer.release()
    return path.is_file() and path.stat().st_size > 0


def corrupt_video(rng: np.random.Generator, path: Path, variant: str | None = None) -> tuple[Path, str]:
    """Write a broken video at ``path`` (.mp4 etc.; or a folder / nothing); returns (path, variant). Every variant
    must be a user error naming the file."""
    variant = variant or VIDEO_VARIANTS[int(rng.integers(len(VIDEO_VARIANTS)))]
    if variant == "random-bytes":
        path.write_bytes(rng.bytes(int(rng.integers(1, 20000))))
    elif variant == "empty":
        path.write_bytes(b"")
    elif variant in ("truncated", "header-then-garbage", "zero-frames"):
        tmp = path.with_name(".tmp_" + path.name)
        n = 0 if variant == "zero-frames" else 6
        frames = [_u8(_texture(rng, 32, 48)) for _ in range(max(n, 1))]
        if not write_video(tmp, frames if n else frames[:1]):
            path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + rng.bytes(100))
            return path, variant
        data = tmp.read_bytes()
        tmp.unlink()
        if variant == "truncated":
            data = data[: int(len(data) * rng.uniform(0.05, 0.6))]
        elif variant == "header-then-garbage":
            data = data[:64] + rng.bytes(len(data) - 64)
        else:  # keep only the container header: no frame
            data = data[:48]
        path.write_bytes(data)
    elif variant == "image-renamed":
        Image.fromarray(_u8(_texture(rng, 32, 32))).save(path, format="PNG")
    elif variant == "directory":
        path.mkdir()
    return path, variant


@family("register-rig", "register IR VIS --rig RIG.json with a corrupt rig file", requires=has_option("register", "--rig"))
def _f_register_rig(ctx: Ctx) -> Case:
    ir, vis = _good(ctx, "ir", (32, 32)), _good(ctx, "vis", (32, 32))
    rig, variant = corrupt_rig_json(ctx.rng, ctx.path("rig.json"), ctx.pick(RIG_VARIANTS))
    out = ctx.path("out.png")
    argv = ["register", str(ir.path), str(vis.path), "-o", str(out), "--rig", str(rig)]
    return Case("", 0, argv, USER_ERROR, (str(rig),), absent=(str(out),), note=f"register --rig {variant}")


@family("calibrate-folders", "calibrate with a missing, empty or unpaired frame folder", requires=has_verb("calibrate"))
def _f_calibrate(ctx: Ctx) -> Case:
    ir_dir, vis_dir = ctx.path("ir"), ctx.path("vi")
    variant = ctx.pick(["missing-ir", "missing-vis", "empty", "unpaired", "file-not-folder"])
    if variant != "missing-ir":
        ir_dir.mkdir()
    if variant != "missing-vis":
        vis_dir.mkdir()
    if variant == "unpaired":
        make_image("grey8", ctx.rng, ir_dir / "a", 32, 32)
        make_image("grey8", ctx.rng, vis_dir / "b", 32, 32)
    if variant == "file-not-folder":
        vis_dir.rmdir()
        vis_dir.write_bytes(b"not a folder")
    named = {"missing-ir": ir_dir, "missing-vis": vis_dir, "file-not-folder": vis_dir}.get(variant, ir_dir)
    argv = ["calibrate", "--ir-dir", str(ir_dir), "--vis-dir", str(vis_dir), "-o", str(ctx.path("rig.json"))]
    return Case("", 0, argv, USER_ERROR, (str(named),), absent=(str(ctx.path("rig.json")),),
                note=f"calibrate {variant}")


@family("fuse-rig", "fuse IR VIS --rig RIG.json with a corrupt rig file", requires=has_option("fuse", "--rig"))
def _f_fuse_rig(ctx: Ctx) -> Case:
    ir, vis = _good(ctx, "ir", (32, 32)), _good(ctx, "vis", (32, 32))
    rig, variant = corrupt_rig_json(ctx.rng, ctx.path("rig.json"), ctx.pick(RIG_VARIANTS))
    out = ctx.path("out.png")
    argv = ["fuse", str(ir.path), str(vis.path), "-o", str(out), "--rig", str(rig)] + _model(ctx)
    return Case("", 0, argv, USER_ERROR, (str(rig),), absent=(str(out),), note=f"fuse --rig {variant}")


@family("fuse-video", "fuse --ir-video/--vis-video with a corrupt video", requires=has_option("fuse", "--ir-video"))
def _f_fuse_video(ctx: Ctx) -> Case:
    from alignfuse.cli import build_parser

    # an image renamed .mp4 is a valid one-frame video to ffmpeg (PyAV decodes it): not a failure case here
    bad, variant = corrupt_video(ctx.rng, ctx.path("bad.mp4"), ctx.pick([v for v in VIDEO_VARIANTS if v != "image-renamed"]))
    good = ctx.path("good.mp4")
    write_video(good, [_u8(_texture(ctx.rng, 32, 48)) for _ in range(4)])
    out = ctx.path("out.mp4")
    ir, vis = (bad, good) if ctx.turn % 2 == 0 else (good, bad)
    argv = ["fuse", "--ir-video", str(ir)]
    if has_option("fuse", "--vis-video")(build_parser()):
        argv += ["--vis-video", str(vis)]
    argv += ["-o", str(out)] + _model(ctx)
    return Case("", 0, argv, USER_ERROR, (str(bad),), note=f"fuse video {variant}")
