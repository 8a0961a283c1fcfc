"""Reading, writing and pairing users' infrared / visible images.

Conventions (used everywhere in alignfuse):

* Images in memory are ``float32`` numpy arrays in ``[0, 1]``, ``(H, W)`` for grey and
  ``(H, W, 3)`` RGB for colour (channel order R, G, B). Infrared is always ``(H, W)``.
* Sizes in messages are written ``WxH`` (width first, as image viewers do); array shapes are
  ``(H, W)``.
* Colour <-> luminance uses YCbCr, ITU-R BT.601 *full range* as in JPEG/JFIF::

      Y  = 0.299 R + 0.587 G + 0.114 B
      Cb = 0.5 + (B - Y) / 1.772
      Cr = 0.5 + (R - Y) / 1.402

  with everything in ``[0, 1]`` (this is OpenCV's ``COLOR_RGB2YCrCb`` / Pillow's ``YCbCr``
  channel layout aside). OpenCV's float conversion and ``kornia.color.rgb_to_ycbcr`` use the
  rounded chroma scales 0.564 / 0.713 instead of 1/1.772 and 1/1.402: Y is identical, Cb/Cr
  differ by < 4e-4. We use the exact JFIF constants so :func:`rgb_to_ycbcr` and
  :func:`ycbcr_to_rgb` are an exact inverse pair.
* Orientation: the EXIF orientation tag is honoured (pixels are returned upright, as image
  viewers show them) for files Pillow decodes (all but the OpenCV fallback: 16-bit colour
  and TIFF variants Pillow lacks); multi-page files give their first page.
* Bit depth normalisation, applied by :func:`read_image` (the policy used is recorded in
  :attr:`LoadedImage.norm`):

  - 8-bit: always ``/255``.
  - 16-bit: the ``norm`` option. ``'percentile'`` (default for infrared) maps the
    :data:`DEFAULT_IR_PERCENTILES` (0.5, 99.5) percentiles to 0 and 1 and clips beyond:
    radiometric 16-bit IR typically occupies a narrow band of 0..65535 (e.g. 7000..9000),
    so ``/65535`` would give a nearly flat image. ``'fixed'`` (default for visible) is
    ``/65535``, which keeps exposure and colour balance. ``'minmax'`` maps the image's
    min/max to 0/1. A ``(lo, hi)`` tuple is ``'percentile'`` with those percentiles
    (``(0, 100)`` = min-max). A constant image (no range) falls back to ``'fixed'``.
  - float (reported as ``bit_depth=32``; also integer samples wider than 16 bits): used as
    they are when they lie in ``[0, 1]``, otherwise min-max normalised. NaN/inf are an error.
  - Colour images are normalised with one (lo, hi) for all three channels (hue is kept).

Writes are atomic: data goes to a hidden temporary file in the destination directory which
is then ``os.replace``-d onto the target, so an interrupted or failed write never leaves a
partial file (an existing target keeps its old content).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field as dc_field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import UserError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MIN_SIZE",
    "IMAGE_EXTS",
    "DEFAULT_IR_PERCENTILES",
    "ImageReadError",
    "PairingError",
    "FieldError",
    "LoadedImage",
    "Pair",
    "PairSpec",
    "check_readable",
    "read_image",
    "normalise",
    "write_image",
    "check_output_path",
    "check_writable",
    "field_path",
    "matrix_to_raw_ir",
    "write_field",
    "read_field",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "to_tensor",
    "pair_folders",
    "load_pair",
    "read_split",
]

#: Smallest accepted width and height, in pixels.
MIN_SIZE = 8
#: File extensions (lower case) recognised as images when pairing folders.
IMAGE_EXTS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: Default percentiles of the 16-bit infrared normalisation.
DEFAULT_IR_PERCENTILES: tuple[float, float] = (0.5, 99.5)

PathLike = Union[str, os.PathLike]
Norm = Union[str, tuple[float, float], None]

_NORMS = ("percentile", "minmax", "fixed")
_OUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
OUTPUT_EXTENSIONS = tuple(_OUT_FORMATS)  # what write_image writes
# the folders a dataset is read from: image pairs, a raw rig set's IR, a stored test set's ground truth and fields
DATASET_FOLDERS = ("ir", "vi", "ir_raw", "ir_gt", "ir_warp", "field")
_SIXTEEN_BIT_FORMATS = ("PNG", "TIFF")
_KR, _KG, _KB = 0.299, 0.587, 0.114  # BT.601 luma weights
_CB_SCALE, _CR_SCALE = 1.772, 1.402  # 2 * (1 - K_B), 2 * (1 - K_R)


class ImageReadError(UserError):
    """An image file that cannot be used; the message is one line, ``"<path>: <problem>"``."""


class PairingError(UserError):
    """Infrared and visible inputs that cannot be paired (missing folder, size mismatch...)."""


class FieldError(UserError):
    """A displacement-field file that cannot be used; the message is ``"<path>: <problem>"``."""


@dataclass
class LoadedImage:
    """An image as read by :func:`read_image`.

    data: float32 ``(H, W)`` (mode ``'L'``) or ``(H, W, 3)`` RGB (mode ``'RGB'``) in [0, 1].
    bit_depth: 8, 16, or 32 (float, or integers wider than 16 bits) of the file's samples.
    mode: ``'L'`` or ``'RGB'``, the layout of ``data``.
    path: the file read.
    source_mode: the decoder's description of the file (Pillow mode such as ``'I;16'``,
        ``'RGBA'``, ``'P'``, or ``'cv2:uint16x3'`` when OpenCV decoded it).
    notes: human-readable remarks on conversions applied (alpha dropped, colour infrared
        reduced to luminance, min-max normalisation of a float image...) and the decoder's
        warnings about the file (e.g. corrupt EXIF data).
    norm: the normalisation applied: ``'fixed'``, ``'minmax'``, ``'percentile(lo,hi)'`` or
        ``'as-is'`` (float already in [0, 1]).
    """

    data: np.ndarray
    bit_depth: int
    mode: str
    path: Path
    source_mode: str = ""
    notes: list[str] = dc_field(default_factory=list)
    norm: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.data.shape[1]), int(self.data.shape[0])


class PairSpec(NamedTuple):
    """One pair found by :func:`pair_folders`: ``(stem, ir_path, vis_path)``."""

    stem: str
    ir: Path
    vis: Path


@dataclass
class Pair:
    """An infrared / visible pair on the visible grid, as returned by :func:`load_pair`.

    ir: float32 (H, W) in [0, 1] (resampled onto the visible grid when ``ir_resized``).
    vis: float32 (H, W) or (H, W, 3) RGB in [0, 1].
    vis_y: (H, W) luminance of ``vis`` (``vis`` itself when grey).
    vis_cb, vis_cr: (H, W) chroma (BT.601 full range, see module doc), ``None`` when grey.
    name: the pair's name (the visible file's stem unless given).
    ir_size: (width, height) of the infrared file before any resampling.
    """

    name: str
    ir: np.ndarray
    vis: np.ndarray
    vis_y: np.ndarray
    vis_cb: np.ndarray | None
    vis_cr: np.ndarray | None
    ir_path: Path
    vis_path: Path
    ir_bit_depth: int
    vis_bit_depth: int
    ir_size: tuple[int, int]
    ir_resized: bool = False
    notes: list[str] = dc_field(default_factory=list)

    @property
    def is_colour(self) -> bool:
        return self.vis.ndim == 3

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the common (visible) grid."""
        return int(self.vis.shape[1]), int(self.vis.shape[0])

    @property
    def ir_name(self) -> str:
        return self.ir_path.name

    @property
    def vis_name(self) -> str:
        return self.vis_path.name


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


def _fail(path: Path, problem: str, cause: BaseException | None = None) -> ImageReadError:
    err = ImageReadError(f"{path}: {problem}")
    if cause is not None:
        err.__cause__ = cause
    return err


def _rawmode(im: Image.Image) -> str:
    """Pillow's raw (file) mode of the first tile, '' when unknown."""
    try:
        args = im.tile[0].args if hasattr(im.tile[0], "args") else im.tile[0][3]
    except (IndexError, AttributeError, TypeError):
        return ""
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return ""


def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Send file descriptor 2 to the null device for the duration: libpng inside OpenCV prints its warnings and
    errors there directly (no Python setting reaches it), and the caller reports any failure in one line."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _decode_cv2(path: Path) -> tuple[np.ndarray, str] | None:
    """OpenCV decode (IMREAD_UNCHANGED), channels reordered to RGB(A); None if it fails. What OpenCV and its
    codecs print about a damaged file (its log, libtiff's and libpng's messages) is silenced: the caller reports
    the failure in one line."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    level = log.getLogLevel() if log is not None else None
    if log is not None:
        log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
        with _native_stderr_silenced():
            arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    except (cv2.error, OSError, ValueError):
        return None
    finally:
        if log is not None:
            log.setLogLevel(level)
    if arr is None or not isinstance(arr, np.ndarray):
        return None
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    desc = f"cv2:{arr.dtype.name}x{channels}"
    if arr.ndim == 3:
        if channels == 1:
            arr = arr[:, :, 0]
        elif channels == 3:
            arr = arr[:, :, ::-1]
        elif channels == 4:
            arr = arr[:, :, [2, 1, 0, 3]]
    return np.ascontiguousarray(arr), desc


def _pil_to_array(im: Image.Image, path: Path, notes: list[str]) -> np.ndarray:
    """Pillow image -> numpy (H, W) or (H, W, C) with channels L/LA/RGB/RGBA."""
    mode = im.mode
    if mode == "1":
        im = im.convert("L")
    elif mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode == "La":
        im = im.convert("LA")
    elif mode in ("RGBa", "RGBX"):
        im = im.convert("RGBA" if mode == "RGBa" else "RGB")
    elif mode in ("CMYK", "YCbCr"):
        im = im.convert("RGB")
        notes.append(f"{mode} converted to RGB")
    elif mode in ("L", "LA", "RGB", "RGBA", "F", "I") or mode.startswith("I;16"):
        pass
    else:
        raise _fail(path, f"unsupported mode {mode!r} (supported: 1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, I;16, I, F)")
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    elif im.mode == "I":
        arr = _wide_integers(arr, notes)
    return arr


def _wide_integers(arr: np.ndarray, notes: list[str]) -> np.ndarray:
    """Integer samples wider than 8 bits: 16-bit data when they fit in 0..65535, else float (min-max normalised
    later)."""
    if arr.size and arr.min() >= 0 and arr.max() <= 65535:
        return arr.astype(np.uint16)
    notes.append("integer samples outside 0..65535 treated as float")
    return arr.astype(np.float64)


def _unsigned_32bit_tiff(im: Image.Image) -> bool:
    """A TIFF of unsigned 32-bit samples, which Pillow reads as signed (values >= 2**31 would wrap)."""
    if im.format != "TIFF" or im.mode != "I":
        return False
    tags = getattr(im, "tag_v2", {})
    bits, fmt = tags.get(258, (0,)), tags.get(339, (1,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    fmt = fmt if isinstance(fmt, tuple) else (fmt,)
    return bits[:1] == (32,) and fmt[:1] == (1,)


def _decode(path: Path) -> tuple[np.ndarray, str, list[str]]:
    """Decode a file to a numpy array in RGB(A) channel order, undoing EXIF orientation.

    Pillow first; OpenCV (``IMREAD_UNCHANGED``) when Pillow cannot identify the file, when it
    fails on a TIFF it does not support, when Pillow would silently reduce 16-bit colour
    to 8 bits (16-bit RGB(A) PNG / TIFF), or read unsigned 32-bit TIFF samples as signed.
    Returns (array, source description, notes).
    """
    notes: list[str] = []
    try:
        with Image.open(path) as im:
            source_mode = im.mode
            raw = _rawmode(im)
            if im.mode in ("RGB", "RGBA", "LA", "RGBX") and "16" in raw:
                fallback = _decode_cv2(path)
                if fallback is not None:
                    arr = fallback[0]
                    if raw.startswith("LA") and arr.ndim == 3 and arr.shape[2] == 4:  # OpenCV expands grey+alpha
                        return np.ascontiguousarray(arr[:, :, [0, 3]]), "cv2:uint16x2", notes
                    return arr, fallback[1], notes
                raise _fail(path, f"cannot read 16-bit {im.mode} image (truncated, damaged or a variant OpenCV lacks)")
            if _unsigned_32bit_tiff(im):
                fallback = _decode_cv2(path)
                if fallback is not None and fallback[0].dtype == np.uint32:
                    return _wide_integers(fallback[0], notes), fallback[1], notes
            if getattr(im, "n_frames", 1) > 1:
                notes.append(f"multi-page file ({im.n_frames} pages): first page used")
            im.load()
            try:
                orientation = im.getexif().get(0x0112, 1)
            except Exception:  # malformed EXIF must not make an otherwise good image unreadable
                orientation = 1
            if orientation in (2, 3, 4, 5, 6, 7, 8):
                im = ImageOps.exif_transpose(im)
                notes.append(f"EXIF orientation {orientation} applied")
            return _pil_to_array(im, path, notes), source_mode, notes
    except (ImageReadError, MemoryError):
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as e:
        fallback = _decode_cv2(path)
        if fallback is None:
            bomb = isinstance(e, Image.DecompressionBombError)
            problem = f"image too large to decode ({e})" if bomb else "cannot read image (truncated or not an image)"
            raise _fail(path, problem, e) from e
        return fallback[0], fallback[1], notes
    except Exception as e:  # decoder errors: OSError, SyntaxError, ValueError, struct.error...
        if "truncated" not in str(e) and _is_tiff(path):
            fallback = _decode_cv2(path)
            if fallback is not None:
                return fallback[0], fallback[1], notes
        raise _fail(path, "cannot read image (truncated or not an image)", e) from e


def _check_norm(norm: Norm) -> Norm:
    if norm is None or norm in _NORMS:
        return norm
    if isinstance(norm, (tuple, list)) and len(norm) == 2:
        lo, hi = float(norm[0]), float(norm[1])
        if 0.0 <= lo < hi <= 100.0:
            return (lo, hi)
        raise UserError(f"percentiles must satisfy 0 <= lo < hi <= 100, got {tuple(norm)}")
    raise UserError(f"norm must be one of {_NORMS}, a (lo, hi) percentile pair, or None; got {norm!r}")


def normalise(raw: np.ndarray, bit_depth: int, norm: Norm = None) -> tuple[np.ndarray, str]:
    """Map raw samples to float32 [0, 1]; returns (data, description of the policy used).

    raw: (H, W) or (H, W, C) samples. bit_depth: 8, 16 or 32 (float); ``'fixed'`` divides by
    255, 65535, or (float) just clips to [0, 1]. norm: ``'fixed'``, ``'minmax'``,
    ``'percentile'`` (with :data:`DEFAULT_IR_PERCENTILES`), a ``(lo, hi)`` percentile pair, or
    ``None`` (integers: fixed; float: as is when within [0, 1], else minmax).
    :func:`read_image` passes ``norm`` only for 16-bit data (module doc).
    """
    norm = _check_norm(norm)
    x = np.asarray(raw)
    if x.size == 0:
        raise ValueError("cannot normalise an empty image")
    full = {8: 255.0, 16: 65535.0}.get(bit_depth, 1.0)
    used = ""
    if norm is None:
        if bit_depth in (8, 16):
            norm = "fixed"
        elif float(x.min()) >= 0.0 and float(x.max()) <= 1.0:
            norm, used = "fixed", "as-is"
        else:
            norm = "minmax"
    if norm == "fixed":
        out = x.astype(np.float32)
        if full != 1.0:
            out /= np.float32(full)
        return np.clip(out, 0.0, 1.0, out=out), used or "fixed"
    if norm == "minmax":
        lo, hi = float(x.min()), float(x.max())
        used = "minmax"
    else:
        q = DEFAULT_IR_PERCENTILES if norm == "percentile" else norm
        lo, hi = (float(v) for v in np.percentile(x, q))
        used = f"percentile({q[0]:g},{q[1]:g})"
        if hi <= lo:  # narrower than the sample spacing: use the full range instead
            lo, hi = float(x.min()), float(x.max())
            used = "minmax"
    if hi <= lo:  # constant image
        return normalise(x, bit_depth, "fixed")
    out = ((x.astype(np.float64) - lo) / (hi - lo)).astype(np.float32)
    return np.clip(out, 0.0, 1.0, out=out), used


def check_readable(path: PathLike) -> Path:
    """The checks before an image is decoded (it exists, is a non-empty, readable file) -> the path;
    :class:`ImageReadError` (``"<path>: <problem>"``) otherwise. Cheap, so a command can run them before it loads
    its networks."""
    path = Path(path)
    if not path.exists():
        raise _fail(path, "broken symbolic link (its target is missing, or a loop)" if path.is_symlink()
                    else "no such file")
    if path.is_dir():
        raise _fail(path, "is a directory, not an image file")
    try:
        if path.stat().st_size == 0:
            raise _fail(path, "empty file")
    except OSError as e:
        raise _fail(path, f"cannot access file ({e.strerror or e})", e) from e
    if not os.access(path, os.R_OK):
        raise _fail(path, "permission denied")
    return path


def read_image(path: PathLike, kind: str = "vis", norm: Norm = None) -> LoadedImage:
    """Read an image file as float32 in [0, 1].

    path: PNG, JPEG, TIFF (8/16-bit, 32-bit float, 16-bit RGB via OpenCV), BMP, or anything
        else Pillow or OpenCV decodes.
    kind: ``'ir'`` or ``'vis'``. Infrared is always returned grey ``(H, W)``: a 3-channel
        file with identical channels is grey; real colour is reduced to BT.601 luminance
        (with a note: a false-colour palette is not temperature). Visible keeps its colour.
    norm: normalisation of 16-bit data (module doc): ``'percentile'``, ``'minmax'``,
        ``'fixed'``, a ``(lo, hi)`` percentile pair, or ``None`` for the default
        (``'percentile'`` (0.5, 99.5) for IR, ``'fixed'`` /65535 for visible). 8-bit data is
        always /255; float data is used as is within [0, 1], else min-max normalised.

    Alpha channels are dropped (RGBA -> RGB, LA -> L), not composited. Raises
    :class:`ImageReadError` (``"<path>: <problem>"``) for a missing, empty, undecodable,
    too-small (< :data:`MIN_SIZE`), non-finite or unsupported image.
    """
    if kind not in ("ir", "vis"):
        raise ValueError(f"kind must be 'ir' or 'vis', got {kind!r}")
    norm = _check_norm(norm)
    path = check_readable(path)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arr, source_mode, notes = _decode(path)
    about_file = []  # the decoders' warnings about this file (corrupt EXIF, a huge image...): notes naming it
    for w in caught:
        if issubclass(w.category, (UserWarning, RuntimeWarning)):
            about_file.append(" ".join(str(w.message).split()))
        else:  # deprecations and the like: to the usual filters
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    notes[:0] = list(dict.fromkeys(about_file))

    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        raise _fail(path, f"unsupported mode {source_mode!r} (array of shape {arr.shape})")
    h, w = arr.shape[:2]
    if h == 0 or w == 0:
        raise _fail(path, "image has zero size")
    if h < MIN_SIZE or w < MIN_SIZE:
        raise _fail(path, f"image is {w}x{h} pixels; at least {MIN_SIZE}x{MIN_SIZE} needed")

    if arr.dtype.kind in "iu" and arr.dtype not in (np.uint8, np.uint16):  # OpenCV's signed / 32-bit samples
        arr = _wide_integers(arr, notes) if arr.dtype.itemsize > 1 else arr.astype(np.float64)
    if arr.dtype == np.uint8:
        bit_depth = 8
    elif arr.dtype == np.uint16:
        bit_depth = 16
    elif arr.dtype.kind == "f":
        bit_depth = 32
        if not np.isfinite(arr).all():
            raise _fail(path, "contains NaN/inf values")
    else:
        raise _fail(path, f"unsupported mode {source_mode!r} (sample type {arr.dtype.name})")

    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):
            arr = arr[:, :, :-1]
            notes.append("alpha channel dropped")
        if arr.shape[2] == 1:
            arr = arr[:, :, 0]

    if kind == "ir" and arr.ndim == 3:
        if np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 0], arr[:, :, 2]):
            arr = arr[:, :, 0]
        else:
            a = arr.astype(np.float64)
            arr = _KR * a[:, :, 0] + _KG * a[:, :, 1] + _KB * a[:, :, 2]
            notes.append("colour infrared reduced to BT.601 luminance (a false-colour palette is not temperature)")

    if bit_depth == 16:
        policy = norm if norm is not None else ("percentile" if kind == "ir" else "fixed")
    else:
        policy = None
    data, used = normalise(arr, bit_depth, policy)
    if bit_depth == 32 and used == "minmax":
        notes.append(f"float values in [{float(arr.min()):g}, {float(arr.max()):g}] min-max normalised")
    data = np.ascontiguousarray(data, dtype=np.float32)
    return LoadedImage(data, bit_depth, "L" if data.ndim == 2 else "RGB", path, source_mode, notes, used)


# --------------------------------------------------------------------------------------
# colour and tensors
# --------------------------------------------------------------------------------------


def rgb_to_ycbcr(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(H, W, 3) RGB float in [0, 1] -> (Y, Cb, Cr), each float32 (H, W) in [0, 1].

    ITU-R BT.601 full range as in JPEG/JFIF (module doc); chroma is centred on 0.5.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must have shape (H, W, 3), got {rgb.shape}")
    r, g, b = np.moveaxis(rgb, -1, 0).astype(np.float64)  # planar copy: fast channel access
    y = _KR * r
    y += _KG * g
    y += _KB * b
    b -= y
    b *= 1.0 / _CB_SCALE
    b += 0.5
    r -= y
    r *= 1.0 / _CR_SCALE
    r += 0.5
    return y.astype(np.float32), b.astype(np.float32), r.astype(np.float32)


def ycbcr_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, clip: bool = True) -> np.ndarray:
    """(Y, Cb, Cr) each (H, W) -> (H, W, 3) float32 RGB; the exact inverse of :func:`rgb_to_ycbcr`.

    clip: clip to [0, 1] (a fused Y with the original chroma can leave the RGB gamut).
    """
    y, cb, cr = (np.asarray(c, dtype=np.float64) for c in (y, cb, cr))
    if y.ndim != 2 or cb.shape != y.shape or cr.shape != y.shape:
        raise ValueError(f"y, cb, cr must be (H, W) of one shape, got {y.shape}, {cb.shape}, {cr.shape}")
    r = y + _CR_SCALE * (cr - 0.5)
    b = y + _CB_SCALE * (cb - 0.5)
    g = (y - _KR * r - _KB * b) / _KG
    out = np.empty(y.shape + (3,), np.float32)
    for i, c in enumerate((r, g, b)):
        out[:, :, i] = c
    return np.clip(out, 0.0, 1.0, out=out) if clip else out


def _as_array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A tensor's values as a numpy array (a tensor only exists once torch is loaded: reading and checking images
    does not load it)."""
    torch = sys.modules.get("torch")
    return x.detach().cpu().numpy() if torch is not None and isinstance(x, torch.Tensor) else np.asarray(x)


def to_tensor(arr: np.ndarray, device: str | torch.device | None = None) -> torch.Tensor:
    """(H, W) -> (1, 1, H, W); (H, W, C) -> (1, C, H, W); float32 tensor (values unchanged)."""
    import torch

    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[None, None]
    elif a.ndim == 3:
        a = a.transpose(2, 0, 1)[None]
    else:
        raise ValueError(f"expected (H, W) or (H, W, C), got shape {a.shape}")
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return t.to(device) if device is not None else t


# --------------------------------------------------------------------------------------
# writing (atomic)
# --------------------------------------------------------------------------------------


def _default_file_mode(target: Path) -> int:
    """Permissions for a new file: the existing target's, else 0o666 minus the umask."""
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        pass
    umask = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
                    break
    except (OSError, ValueError):
        pass
    if umask is None:
        umask = os.umask(0)
        os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: Path, writer: Callable[[IO[bytes]], None]) -> Path:
    """Call ``writer(f)`` on a temporary file next to ``path``, then ``os.replace`` it there.

    On any error (including KeyboardInterrupt) the temporary file is removed and ``path`` is
    left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = _default_file_mode(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from e
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise _write_error(path, e) from e
        raise
    return path


def _write_error(path: Path, e: OSError) -> OSError:
    """``e`` as an OSError about ``path`` (the file being written), not about the temporary file beside it."""
    other = e.filename and Path(os.fsdecode(e.filename)) != path and not Path(os.fsdecode(e.filename)).name.startswith(
        f".{path.name}.")
    detail = f"{e.strerror or e}" + (f" ({os.fsdecode(e.filename)})" if other else "")
    return OSError(e.errno, f"cannot write file: {detail}", str(path))


def _encode_into(f: IO[bytes], q: np.ndarray, fmt: str, ext: str) -> None:
    """Encode quantised samples ``q`` (uint8/uint16, (H, W) or (H, W, 3) RGB) into ``f``."""
    if q.dtype == np.uint16 and q.ndim == 3:  # Pillow cannot write 16-bit RGB
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(q[:, :, ::-1]))
        if not ok:
            raise OSError(f"OpenCV could not encode a 16-bit {fmt} image")
        f.write(buf.tobytes())
        return
    im = Image.fromarray(q)  # uint8 -> L / RGB, uint16 (H, W) -> I;16
    options: dict[str, Any] = {}
    if fmt == "JPEG":
        options = {"quality": 95, "subsampling": 0}
    elif fmt == "PNG":
        options = {"compress_level": 6}
    im.save(f, format=fmt, **options)


def check_writable(path: PathLike, probe: bool = False) -> Path:
    """``UserError`` when a file could not be written at ``path`` (an existing folder there, a file where a
    parent folder should be, a read-only folder); missing parent folders are fine (writers create them). With
    ``probe`` (the checks before a run's work), a temporary file is also created and removed in the folder."""
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise UserError(f"{str(path)!r}: not a file name")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{path}: cannot be written: {parent} is a file, not a folder")
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{path}: cannot be written: folder {parent} is not writable")
    if probe and parent.is_dir():  # os.access says yes for root where nothing can be created (/proc, read-only mounts)
        try:
            with tempfile.NamedTemporaryFile(dir=parent, prefix=".alignfuse-probe-"):
                pass
        except OSError as exc:
            raise UserError(f"{path}: cannot be written in {parent}: {exc.strerror or exc}") from None
    return path


def resolved_path(path: PathLike) -> Path:
    """``Path(path).resolve()``, or the absolute path when it cannot be resolved (a symlink loop raises
    RuntimeError); reading or writing such a path then fails with a one-line error naming it."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.abspath(path))


def check_output_folder(out: PathLike, datasets: Sequence[PathLike], option: str) -> None:
    """Fail before any work when the output folder ``out`` (given as ``option``) is one of the ``datasets`` folders
    or lies in one of their input folders (:data:`DATASET_FOLDERS`): what a command writes there would be read back
    as input images (a report's example JPEGs as unpaired visible images) or overwrite them."""
    target = resolved_path(out)
    for data in datasets:
        root = resolved_path(data)
        if target == root:
            raise UserError(f"{option} {out}: is the input dataset folder {data}; write the outputs elsewhere")
        for sub in DATASET_FOLDERS:
            if target == root / sub or root / sub in target.parents:
                raise UserError(f"{option} {out}: is inside the input image folder {Path(data) / sub}; the outputs "
                                "would mix with the inputs")


def check_outputs(inputs: Sequence[PathLike], outputs: Sequence[tuple[PathLike | None, str]],
                  bit_depth: int = 8) -> None:
    """Fail before any work when an output would overwrite an input or another output, or cannot be written
    (the CLI and the Python API share it).

    outputs: (path or None, what) with what "field" for a field file, anything else for an image."""
    taken = {resolved_path(p): "input" for p in inputs}
    for path, what in outputs:
        if path is None:
            continue
        target = field_path(path) if what == "field" else Path(path)
        if what != "field":
            check_output_path(target, bit_depth, probe=True)
        else:
            check_writable(target, probe=True)
        key = resolved_path(target)
        if key in taken:
            raise UserError(f"{target}: would overwrite the {taken[key]}; choose another path for the {what}")
        taken[key] = what


def check_output_path(path: PathLike, bit_depth: int = 8, label: str | None = None, probe: bool = False) -> str:
    """The writer format (e.g. ``"PNG"``) for an image path, or ``ValueError`` when :func:`write_image` could
    not write it (unknown extension, 16 bits in a format without them, see also :func:`check_writable`): lets a
    batch fail before any work. ``label`` names what the user gave in the messages (e.g. ``"--ext webp"``, for a
    batch's example path that names no real file); default: the path."""
    path = Path(path)
    label = label or str(path)
    if path.is_dir():
        raise UserError(f"{label}: is a folder; give a file name")
    fmt = _OUT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{label}: unsupported output extension {path.suffix!r} (use one of {', '.join(_OUT_FORMATS)})")
    if bit_depth not in (8, 16):
        raise UserError(f"bit_depth must be 8 or 16, got {bit_depth!r}")
    if bit_depth == 16 and fmt not in _SIXTEEN_BIT_FORMATS:
        raise UserError(f"{label}: 16-bit output needs .png or .tif, not {path.suffix!r}")
    check_writable(path, probe)
    return fmt


def field_path(path: PathLike) -> Path:
    """Where :func:`write_field` writes ``path``: ``.npy`` appended when the name lacks it (as ``numpy.save`` does:
    ``fields`` -> ``fields.npy``, beside a folder of that name if there is one); a path ending in a separator names
    a folder and is a :class:`UserError`."""
    raw = os.fspath(path)
    path = Path(path)
    if not path.name or path.name in (".", "..") or raw.endswith(("/", os.sep)):
        raise UserError(f"{raw!r}: not a file name for a field (give e.g. field.npy)")
    return path if path.suffix.lower() == ".npy" else path.with_name(path.name + ".npy")


def write_image(path: PathLike, array: np.ndarray, bit_depth: int = 8) -> Path:
    """Write a float image in [0, 1] atomically; returns the path written.

    array: float (H, W), (H, W, 1) or (H, W, 3) RGB; values outside [0, 1] are clipped, NaN/inf
        raise ``ValueError``.
    bit_depth: 8, or 16 for PNG/TIFF. Quantisation rounds half up: ``floor(x * 255 + 0.5)``
        (65535 for 16-bit).
    The format follows the extension: .png, .jpg/.jpeg (quality 95, 4:4:4), .tif/.tiff, .bmp.
    Parent directories are created; see the module doc for atomicity.
    """
    path = Path(path)
    ext = path.suffix.lower()
    fmt = check_output_path(path, bit_depth)
    a = np.asarray(array)
    if a.dtype.kind != "f":
        raise TypeError(f"write_image expects a float array in [0, 1], got dtype {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 3)) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"image must be (H, W) or (H, W, 3) and non-empty, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{path}: image to write contains NaN/inf values")
    full = 255.0 if bit_depth == 8 else 65535.0
    q = np.floor(np.clip(a.astype(np.float64), 0.0, 1.0) * full + 0.5)
    q = q.astype(np.uint8 if bit_depth == 8 else np.uint16)
    return _atomic_write(path, lambda f: _encode_into(f, q, fmt, ext))


# --------------------------------------------------------------------------------------
# displacement fields
# --------------------------------------------------------------------------------------


def write_field(path: PathLike, field: np.ndarray | torch.Tensor) -> Path:
    """Save a (2, H, W) pixel displacement field (dx, dy; see :mod:`alignfuse.warp`) as float32 .npy.

    A (1, 2, H, W) tensor/array is accepted. ``.npy`` is appended when the name lacks it
    (as ``numpy.save`` does). Atomic; returns the path written.
    """
    path = field_path(path)
    a = _as_array(field)
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[0] != 2 or a.shape[1] == 0 or a.shape[2] == 0:
        raise ValueError(f"{path}: field must have shape (2, H, W), got {a.shape}")
    if a.dtype.kind != "f":
        raise ValueError(f"{path}: field must be floating point, got dtype {a.dtype}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{path}: field contains NaN/inf values")
    return _atomic_write(path, lambda f: np.save(f, a, allow_pickle=False))


def read_field(path: PathLike, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Load a (2, H, W) float32 field written by :func:`write_field`.

    shape: optional expected (H, W). Raises :class:`FieldError` (``"<path>: <problem>"``) for a
    missing/unreadable file, a non-.npy file, a wrong shape or dtype, or NaN/inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise FieldError(f"{path}: no such file")
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise FieldError(f"{path}: not a plain .npy array (pickled objects are refused)") from e
    except (OSError, EOFError) as e:
        raise FieldError(f"{path}: cannot read field (truncated or not a .npy file)") from e
    if not isinstance(a, np.ndarray):
        raise FieldError(f"{path}: not a single .npy array")
    if a.ndim != 3 or a.shape[0] != 2:
        raise FieldError(f"{path}: field must have shape (2, H, W), got {a.shape}")
    if a.dtype.kind != "f":
        raise FieldError(f"{path}: field must be floating point, got dtype {a.dtype}")
    if shape is not None and tuple(a.shape[1:]) != tuple(shape):
        raise FieldError(f"{path}: field is {a.shape[2]}x{a.shape[1]} but the image is {shape[1]}x{shape[0]}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise FieldError(f"{path}: field contains NaN/inf values")
    return a


# --------------------------------------------------------------------------------------
# pairing
# --------------------------------------------------------------------------------------


def _strip_ext(name: str, exts: Sequence[str] = IMAGE_EXTS) -> str:
    """Base name without a trailing image extension (other dots are part of the stem)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    p = Path(base)
    return p.stem if p.suffix.lower() in {e.lower() for e in exts} else base


def read_split(path: PathLike) -> list[str]:
    """Stems listed in a split file, in file order, without duplicates.

    One name per line, with or without an image extension (stripped) or a directory
    (dropped); blank lines and lines starting with ``#`` are skipped; surrounding whitespace
    and a UTF-8 BOM are ignored.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise FileNotFoundError(f"{path}: cannot read split file ({e.strerror or e})") from e
    seen: dict[str, None] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        seen.setdefault(_strip_ext(line), None)
    return list(seen)


def _scan(folder: Path, exts: Sequence[str]) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    """stem -> file for image files in ``folder`` (hidden files skipped); and duplicate stems."""
    allowed = {e.lower() if e.startswith(".") else "." + e.lower() for e in exts}
    found: dict[str, list[Path]] = {}
    for p in folder.iterdir():
        if p.name.startswith(".") or p.suffix.lower() not in allowed or not p.is_file():
            continue
        found.setdefault(p.stem, []).append(p)
    single = {s: ps[0] for s, ps in found.items() if len(ps) == 1}
    dupes = {s: sorted(ps) for s, ps in found.items() if len(ps) > 1}
    return single, dupes


def pair_folders(
    ir_dir: PathLike,
    vis_dir: PathLike,
    exts: Sequence[str] = IMAGE_EXTS,
    names: Iterable[str] | None = None,
) -> tuple[list[PairSpec], list[str]]:
    """Pair the images of two folders by file stem.

    Stems are case sensitive and each side may use any extension in ``exts`` (``a.png`` pairs
    with ``a.tif``). ``names`` (e.g. :func:`read_split`'s output; extensions are stripped)
    restricts the pairing to those stems. Returns ``(pairs, unpaired)``: pairs sorted by stem
    as :class:`PairSpec` ``(stem, ir_path, vis_path)``, and one human-readable line per
    problem (a file without counterpart, a stem with several files on one side, a listed
    name missing). Raises :class:`PairingError` if a folder does not exist.
    """
    ir_dir, vis_dir = Path(ir_dir), Path(vis_dir)
    for d, what in ((ir_dir, "infrared"), (vis_dir, "visible")):
        if not d.is_dir():
            raise PairingError(f"{d}: {what} folder does not exist or is not a folder")
    ir, ir_dupes = _scan(ir_dir, exts)
    vis, vis_dupes = _scan(vis_dir, exts)
    wanted = None if names is None else {_strip_ext(n, exts) for n in names}

    def keep(stem: str) -> bool:
        return wanted is None or stem in wanted

    unpaired: list[str] = []
    for dupes, folder in ((ir_dupes, ir_dir), (vis_dupes, vis_dir)):
        for stem, ps in sorted(dupes.items()):
            if keep(stem):
                unpaired.append(
                    f"{folder}: stem {stem!r} matches several files ({', '.join(p.name for p in ps)}); keep only one"
                )
    ir_all = set(ir) | set(ir_dupes)
    vis_all = set(vis) | set(vis_dupes)
    pairs: list[PairSpec] = []
    for stem in sorted(set(ir) | set(vis)):
        if not keep(stem) or stem in ir_dupes or stem in vis_dupes:
            continue
        if stem in ir and stem in vis:
            pairs.append(PairSpec(stem, ir[stem], vis[stem]))
            continue
        src, other_dir, other_all, other_what = (
            (ir[stem], vis_dir, vis_all, "visible") if stem in ir else (vis[stem], ir_dir, ir_all, "infrared")
        )
        hint = [s for s in other_all if s.lower() == stem.lower()]
        extra = f" ({other_what} stem {hint[0]!r} differs only in case)" if hint else ""
        unpaired.append(f"{src}: no {other_what} image with stem {stem!r} in {other_dir}{extra}")
    if wanted is not None:
        for stem in sorted(wanted - ir_all - vis_all):
            unpaired.append(f"{stem!r} is listed but has no infrared image in {ir_dir} and no visible image in {vis_dir}")
    return pairs, unpaired


def resample_to(ir: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float image -> ``size = (width, height)``: ``cv2.INTER_AREA`` when neither side grows, bicubic
    otherwise, clipped to [0, 1]. Pixel centres follow ``align_corners=False``: resampled x_r = (x + 0.5) *
    width / w - 0.5 (see :func:`field_to_ir_coordinates`)."""
    h, w = ir.shape[:2]
    interp = cv2.INTER_AREA if (size[0] <= w and size[1] <= h) else cv2.INTER_CUBIC
    out = cv2.resize(np.ascontiguousarray(ir, dtype=np.float32), tuple(size), interpolation=interp)
    return np.clip(out, 0.0, 1.0, out=out).astype(np.float32, copy=False)


def field_to_ir_coordinates(field: np.ndarray | torch.Tensor, ir_size: tuple[int, int]) -> np.ndarray:
    """Field (2, H, W) on the visible grid -> (2, H, W) float64 (x, y) positions in the IR as delivered.

    The field is in pixels of the IR resampled onto the visible grid (:func:`resample_to`), so visible pixel
    ``(x, y)`` maps to the raw IR position ``((x + dx + 0.5) * ir_w / W - 0.5, (y + dy + 0.5) * ir_h / H - 0.5)``
    with ``ir_size = (ir_w, ir_h)``; for an IR of the visible size this is just ``(x + dx, y + dy)``."""
    f = _as_array(field)
    if f.ndim != 3 or f.shape[0] != 2:
        raise UserError(f"field must be (2, H, W), got shape {f.shape}")
    h, w = f.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    iw, ih = ir_size
    return np.stack([(xs + f[0] + 0.5) * iw / w - 0.5, (ys + f[1] + 0.5) * ih / h - 0.5])


def matrix_to_raw_ir(matrix: np.ndarray, vis_size: tuple[int, int], ir_size: tuple[int, int]) -> np.ndarray:
    """A 3x3 matrix from visible pixels to pixels of the IR resampled onto the visible grid (what a registration's
    diagnostics hold) -> (3, 3) the same map onto the raw IR's pixels (the convention of a rig file): the scaling of
    :func:`field_to_ir_coordinates` applied after it. Sizes ``(width, height)``; normalised so that [2, 2] = 1."""
    from .pixel_grid import scale_matrix

    (vw, vh), (iw, ih) = vis_size, ir_size
    out = scale_matrix((vh, vw), (ih, iw)) @ np.asarray(matrix, dtype=np.float64)
    return out / out[2, 2]


def resample_note(ir_size: tuple[int, int], vis_size: tuple[int, int]) -> str:
    """What resampling an IR of ``ir_size`` = (width, height) onto the visible grid of ``vis_size`` means, in one
    line (a note of the CLI and an :class:`~alignfuse.errors.AlignfuseWarning` of the API)."""
    (iw, ih), (vw, vh) = ir_size, vis_size
    return (f"{iw}x{ih} resampled onto the {vw}x{vh} visible grid; a pipeline that registers absorbs the difference "
            "in field of view (the field is in pixels of the resampled infrared)")


def load_pair(
    ir_path: PathLike,
    vis_path: PathLike,
    resize_ir: bool = False,
    ir_norm: Norm = None,
    vis_norm: Norm = None,
    name: str | None = None,
) -> Pair:
    """Read an infrared / visible pair (``ir_norm``/``vis_norm``: 16-bit policy, see :func:`read_image`).

    The visible grid is the reference. When the sizes differ the infrared is resampled onto the visible grid
    (:func:`resample_to`; aspect ratio not preserved) and ``Pair.ir_size`` keeps its size as delivered, which
    the registration uses as its prior; a note says so. ``resize_ir`` is accepted for compatibility (resampling
    is always done).
    """
    ir_img = read_image(ir_path, kind="ir", norm=ir_norm)
    vis_img = read_image(vis_path, kind="vis", norm=vis_norm)
    ir, vis = ir_img.data, vis_img.data
    (iw, ih), (vw, vh) = ir_img.size, vis_img.size
    # each note names its file as given (a folder run has many files of one name)
    notes = [f"{ir_img.path} (infrared): {n}" for n in ir_img.notes] + [
        f"{vis_img.path} (visible): {n}" for n in vis_img.notes]
    resized = False
    if (iw, ih) != (vw, vh):
        ir = resample_to(ir, (vw, vh))
        resized = True
        notes.append(f"{ir_img.path} (infrared): {resample_note((iw, ih), (vw, vh))}")
    if vis.ndim == 3:
        vis_y, vis_cb, vis_cr = rgb_to_ycbcr(vis)
    else:
        vis_y, vis_cb, vis_cr = vis, None, None
    return Pair(
        name=name if name is not None else vis_img.path.stem,
        ir=np.ascontiguousarray(ir),
        vis=vis,
        vis_y=vis_y,
        vis_cb=vis_cb,
        vis_cr=vis_cr,
        ir_path=ir_img.path,
        vis_path=vis_img.path,
        ir_bit_depth=ir_img.bit_depth,
        vis_bit_depth=vis_img.bit_depth,
        ir_size=(iw, ih),
        ir_resized=resized,
        notes=notes,
    )
