"""Tests of alignfuse.io with real files written to tmp_path."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import alignfuse.io as aio
from alignfuse.errors import UserError
from alignfuse.io import (
    MIN_SIZE,
    FieldError,
    ImageReadError,
    Pair,
    PairingError,
    load_pair,
    pair_folders,
    read_field,
    read_image,
    read_split,
    rgb_to_ycbcr,
    to_tensor,
    write_field,
    write_image,
    ycbcr_to_rgb,
)

RNG = np.random.default_rng(0)


def _u8(shape):
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def _save(path: Path, arr: np.ndarray, **kw) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


def _radiometric16(h=40, w=50):
    """16-bit 'radiometric' IR occupying a narrow band of 0..65535."""
    return RNG.integers(7000, 9001, size=(h, w)).astype(np.uint16)


# ----------------------------------------------------------------------------- 8-bit reads


def test_png_grey_8bit_exact(tmp_path):
    a = _u8((20, 30))
    img = read_image(_save(tmp_path / "g.png", a), kind="vis")
    assert img.mode == "L" and img.bit_depth == 8 and img.data.dtype == np.float32
    assert img.data.shape == (20, 30) and img.size == (30, 20)
    np.testing.assert_array_equal(img.data, a.astype(np.float32) / 255)
    assert img.path == tmp_path / "g.png"


def test_png_rgb_and_rgba_and_la(tmp_path):
    a = _u8((16, 24, 3))
    img = read_image(_save(tmp_path / "c.png", a))
    assert img.mode == "RGB" and img.data.shape == (16, 24, 3)
    np.testing.assert_array_equal(img.data, a / np.float32(255))

    rgba = np.concatenate([a, _u8((16, 24, 1))], axis=2)
    img = read_image(_save(tmp_path / "ca.png", rgba))
    assert img.mode == "RGB" and img.source_mode == "RGBA"
    np.testing.assert_array_equal(img.data, a / np.float32(255))
    assert any("alpha" in n for n in img.notes)

    la = np.stack([a[:, :, 0], a[:, :, 1]], axis=2)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    assert img.mode == "L" and img.data.shape == (16, 24)
    np.testing.assert_array_equal(img.data, a[:, :, 0] / np.float32(255))


def test_jpeg_rgb_and_grey(tmp_path):
    a = np.full((32, 48, 3), (200, 60, 30), np.uint8)
    img = read_image(_save(tmp_path / "c.jpg", a, quality=95))
    assert img.mode == "RGB" and img.bit_depth == 8 and img.data.shape == (32, 48, 3)
    assert np.abs(img.data - a / 255).max() < 6 / 255
    g = np.full((32, 48), 77, np.uint8)
    img = read_image(_save(tmp_path / "g.jpeg", g), kind="ir")
    assert img.mode == "L" and np.abs(img.data - 77 / 255).max() < 2 / 255


def test_bmp(tmp_path):
    a = _u8((12, 9, 3))
    img = read_image(_save(tmp_path / "c.bmp", a))
    np.testing.assert_array_equal(img.data, a / np.float32(255))
    g = _u8((12, 9))
    img = read_image(_save(tmp_path / "g.bmp", g), kind="ir")
    assert img.mode == "L"
    np.testing.assert_array_equal(img.data, g / np.float32(255))


def test_palette_and_bilevel(tmp_path):
    a = _u8((10, 10, 3))
    Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img.mode == "RGB" and img.source_mode == "P"
    bits = (_u8((10, 10)) > 127).astype(np.uint8) * 255
    Image.fromarray(bits).convert("1").save(tmp_path / "b.png")
    img = read_image(tmp_path / "b.png", kind="ir")
    np.testing.assert_array_equal(img.data, bits / np.float32(255))


def test_exif_orientation_applied(tmp_path):
    a = np.zeros((10, 20, 3), np.uint8)
    a[:, :10] = 255  # left half white
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW to display
    im.save(tmp_path / "o.jpg", exif=exif, quality=95)
    img = read_image(tmp_path / "o.jpg")
    assert img.data.shape == (20, 10, 3)  # upright: width and height swapped
    assert img.data[:10].mean() > 0.9 and img.data[10:].mean() < 0.1  # left half -> top half
    assert any("orientation" in n for n in img.notes)


# ----------------------------------------------------------------------------- IR colour


def test_ir_identical_channels_is_grey_and_colour_ir_is_luminance(tmp_path):
    g = _u8((16, 16))
    img = read_image(_save(tmp_path / "g3.png", np.stack([g, g, g], 2)), kind="ir")
    assert img.mode == "L" and img.data.shape == (16, 16) and not img.notes
    np.testing.assert_array_equal(img.data, g / np.float32(255))
    # the same file read as visible stays RGB
    assert read_image(tmp_path / "g3.png", kind="vis").mode == "RGB"

    c = _u8((16, 16, 3))
    img = read_image(_save(tmp_path / "c.png", c), kind="ir")
    assert img.mode == "L" and img.data.shape == (16, 16)
    expected = (0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]) / 255
    np.testing.assert_allclose(img.data, expected, atol=1e-6)
    assert any("luminance" in n for n in img.notes)


# ----------------------------------------------------------------------------- 16-bit and float


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_grey_percentile_fixed_minmax(tmp_path, ext):
    raw = _radiometric16()
    path = _save(tmp_path / f"ir16{ext}", raw)
    assert Image.open(path).mode.startswith("I;16")

    img = read_image(path, kind="ir")  # default: percentile (0.5, 99.5)
    assert img.bit_depth == 16 and img.mode == "L" and img.norm == "percentile(0.5,99.5)"
    lo, hi = np.percentile(raw, [0.5, 99.5])
    d = img.data
    assert d.min() == 0.0 and d.max() == 1.0
    assert np.all(d[raw <= lo] == 0.0) and np.all(d[raw >= hi] == 1.0)
    mid = (raw > lo) & (raw < hi)
    np.testing.assert_allclose(d[mid], (raw[mid] - lo) / (hi - lo), atol=1e-6)
    # /65535 would give a nearly flat image: that's why percentile is the default
    assert float(raw.max() - raw.min()) / 65535 < 0.04

    fixed = read_image(path, kind="ir", norm="fixed").data
    np.testing.assert_array_equal(fixed, raw.astype(np.float32) / np.float32(65535))
    # visible 16-bit defaults to fixed
    vis = read_image(path, kind="vis")
    np.testing.assert_array_equal(vis.data, fixed)
    assert vis.norm == "fixed"

    mm = read_image(path, kind="ir", norm="minmax").data
    np.testing.assert_allclose(mm, (raw - raw.min()) / float(raw.max() - raw.min()), atol=1e-6)
    # a tuple is a percentile pair; (0, 100) is min-max
    np.testing.assert_allclose(read_image(path, kind="ir", norm=(0.0, 100.0)).data, mm, atol=1e-6)


def test_8bit_is_always_divided_by_255(tmp_path):
    a = RNG.integers(100, 120, size=(10, 10)).astype(np.uint8)  # narrow band, yet not stretched
    path = _save(tmp_path / "ir8.png", a)
    for norm in (None, "percentile", "minmax", "fixed"):
        img = read_image(path, kind="ir", norm=norm)
        np.testing.assert_array_equal(img.data, a / np.float32(255))
        assert img.norm == "fixed"


def test_constant_16bit_image_falls_back_to_fixed(tmp_path):
    raw = np.full((10, 10), 8000, np.uint16)
    img = read_image(_save(tmp_path / "flat.png", raw), kind="ir")
    np.testing.assert_allclose(img.data, 8000 / 65535, atol=1e-7)


def test_bad_norm_rejected(tmp_path):
    path = _save(tmp_path / "g.png", _u8((10, 10)))
    with pytest.raises(ValueError, match="norm"):
        read_image(path, norm="gamma")
    with pytest.raises(ValueError, match="percentiles"):
        read_image(path, norm=(99.0, 1.0))
    with pytest.raises(ValueError, match="kind"):
        read_image(path, kind="thermal")


def test_float32_tiff(tmp_path):
    f = RNG.random((20, 24), dtype=np.float32)
    path = _save(tmp_path / "f.tif", f)
    img = read_image(path, kind="ir")
    assert img.bit_depth == 32 and img.mode == "L" and img.norm == "as-is"
    np.testing.assert_array_equal(img.data, f)

    g = f * 300 - 20  # outside [0, 1] -> min-max
    img = read_image(_save(tmp_path / "g.tif", g), kind="ir")
    np.testing.assert_allclose(img.data, (g - g.min()) / (g.max() - g.min()), atol=1e-6)
    assert any("min-max" in n for n in img.notes)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_float_tiff_nan_inf_rejected(tmp_path, bad):
    f = RNG.random((20, 24), dtype=np.float32)
    f[3, 4] = bad
    path = _save(tmp_path / "nan.tif", f)
    with pytest.raises(ImageReadError, match="contains NaN/inf values") as e:
        read_image(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("ext", [".tif", ".png"])
def test_16bit_rgb_via_cv2_fallback(tmp_path, ext):
    rgb = RNG.integers(0, 65536, size=(18, 22, 3)).astype(np.uint16)
    rgb[..., 0] = 60000  # distinct red so a channel swap would show
    rgb[..., 2] = 1000
    path = tmp_path / f"rgb16{ext}"
    assert cv2.imwrite(str(path), rgb[:, :, ::-1])  # OpenCV writes BGR
    assert Image.open(path).mode == "RGB"  # Pillow alone would reduce this to 8 bits
    img = read_image(path, kind="vis")
    assert img.bit_depth == 16 and img.mode == "RGB" and img.source_mode.startswith("cv2:uint16")
    np.testing.assert_array_equal(img.data, rgb.astype(np.float32) / np.float32(65535))
    ir = read_image(path, kind="ir", norm="fixed")
    assert ir.mode == "L" and ir.data.shape == (18, 22)


# ----------------------------------------------------------------------------- bad files


def test_truncated_png(tmp_path):
    good = _save(tmp_path / "good.png", _u8((64, 64, 3)))
    data = good.read_bytes()
    bad = tmp_path / "truncated.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as e:
        read_image(bad)
    assert str(e.value) == f"{bad}: cannot read image (truncated or not an image)"
    assert isinstance(e.value, ValueError)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    assert str(e.value) == f"{p}: empty file"


def test_random_bytes(tmp_path):
    p = tmp_path / "noise.jpg"
    p.write_bytes(RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    assert str(e.value) == f"{p}: cannot read image (truncated or not an image)"


def test_one_pixel_and_too_small(tmp_path):
    p = _save(tmp_path / "dot.png", np.zeros((1, 1), np.uint8))
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    assert str(e.value) == f"{p}: image is 1x1 pixels; at least 8x8 needed"
    p = _save(tmp_path / "thin.png", np.zeros((MIN_SIZE - 1, 40), np.uint8))
    with pytest.raises(ImageReadError, match=r"image is 40x7 pixels; at least 8x8 needed"):
        read_image(p)
    _save(tmp_path / "ok.png", np.zeros((MIN_SIZE, MIN_SIZE), np.uint8))
    assert read_image(tmp_path / "ok.png").size == (MIN_SIZE, MIN_SIZE)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def test_zero_size(tmp_path, monkeypatch):
    # A zero-width PNG (valid CRCs) is constructible, but no decoder accepts it: it is reported
    # as unreadable. Pillow refuses to write 0x0 PNG/TIFF/BMP at all.
    p = tmp_path / "zero.png"
    ihdr = struct.pack(">IIBBBBB", 0, 5, 8, 0, 0, 0, 0)
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b""))
    with pytest.raises(ImageReadError, match="cannot read image"):
        read_image(p)
    # The zero-size check itself, for a decoder that would return an empty array:
    monkeypatch.setattr(aio, "_decode", lambda path: (np.zeros((0, 5), np.uint8), "L", []))
    with pytest.raises(ImageReadError) as e:
        read_image(p)
    assert str(e.value) == f"{p}: image has zero size"


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="is a directory"):
        read_image(tmp_path)


def test_unsupported_mode(tmp_path):
    Image.new("LAB", (10, 10)).save(tmp_path / "lab.tif")
    with pytest.raises(ImageReadError, match=r"unsupported mode 'LAB'") as e:
        read_image(tmp_path / "lab.tif")
    assert str(e.value).startswith(f"{tmp_path / 'lab.tif'}: ")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- colour


def test_ycbcr_round_trip_and_conventions():
    rgb = np.random.default_rng(1).random((33, 17, 3), dtype=np.float32)
    rgb[0, 0] = (0, 0, 0)
    rgb[0, 1] = (1, 1, 1)
    y, cb, cr = rgb_to_ycbcr(rgb)
    assert y.dtype == cb.dtype == cr.dtype == np.float32 and y.shape == (33, 17)
    back = ycbcr_to_rgb(y, cb, cr)
    assert back.shape == rgb.shape and back.dtype == np.float32
    assert np.abs(back - rgb).max() < 1e-6
    # grey has neutral chroma
    assert abs(cb[0, 1] - 0.5) < 1e-7 and abs(cr[0, 0] - 0.5) < 1e-7
    # Y is the BT.601 luma used by alignfuse.stages.luminance
    np.testing.assert_allclose(y, 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2], atol=1e-6)
    # JPEG/JFIF: Pillow's 8-bit fixed-point YCbCr agrees to one level
    u8 = np.random.default_rng(2).integers(0, 256, size=(64, 64, 3)).astype(np.uint8)
    pil = np.asarray(Image.fromarray(u8).convert("YCbCr")).astype(np.float64)
    ours = np.stack(rgb_to_ycbcr(u8 / 255.0), -1) * 255
    assert np.abs(np.round(ours) - pil).max() <= 1.0
    assert np.abs(ours[..., 1:] - pil[..., 1:]).max() < 0.6  # chroma: rounding only
    # kornia / OpenCV use rounded chroma scales: Y equal, chroma within 4e-4
    import kornia.color as kc

    k = kc.rgb_to_ycbcr(to_tensor(rgb))[0].numpy()
    np.testing.assert_allclose(k[0], y, atol=1e-6)
    assert np.abs(k[1] - cb).max() < 4e-4 and np.abs(k[2] - cr).max() < 4e-4
    ocv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)  # (Y, Cr, Cb)
    assert np.abs(ocv[..., 2] - cb).max() < 4e-4 and np.abs(ocv[..., 1] - cr).max() < 4e-4


def test_ycbcr_clip_out_of_gamut():
    y = np.ones((4, 4), np.float32)
    c = np.zeros((4, 4), np.float32)
    out = ycbcr_to_rgb(y, c, c)
    assert out.min() >= 0 and out.max() <= 1
    assert ycbcr_to_rgb(y, c, c, clip=False).max() > 1


def test_tensor_helpers():
    g = RNG.random((5, 7), dtype=np.float32)
    c = RNG.random((5, 7, 3), dtype=np.float32)
    tg, tc = to_tensor(g), to_tensor(c)
    assert tg.shape == (1, 1, 5, 7) and tc.shape == (1, 3, 5, 7) and tc.dtype == torch.float32
    assert torch.equal(tc[0, 1], torch.from_numpy(c[:, :, 1]))
    with pytest.raises(ValueError):
        to_tensor(np.zeros((1, 1, 5, 7), np.float32))


# ----------------------------------------------------------------------------- writing


@pytest.mark.parametrize("ext", [".png", ".tif", ".bmp"])
def test_write_8bit_round_trip_and_half_up(tmp_path, ext):
    k = np.arange(256, dtype=np.float64)
    x = np.clip((k + 0.5) / 255, 0, 1)
    exact = x * 255 == k + 0.5  # only where the half is exactly representable
    g = np.tile(np.where(exact, x, k / 255), (8, 1))
    p = write_image(tmp_path / "sub" / f"w{ext}", g)
    assert p.exists() and p.parent.name == "sub"
    back = np.asarray(Image.open(p))
    expected = np.floor(np.clip(g, 0, 1) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(back, expected)
    # half up, not half to even: k + 0.5 -> k + 1 also for even k
    even_halves = exact & (k % 2 == 0) & (k < 255)
    assert even_halves.sum() > 5
    np.testing.assert_array_equal(back[0][even_halves], k[even_halves] + 1)


def test_write_rgb_jpeg(tmp_path):
    c = np.zeros((16, 16, 3), np.float32)
    c[..., 0] = 0.8
    p = write_image(tmp_path / "c.jpg", c)
    img = read_image(p)
    assert img.mode == "RGB" and np.abs(img.data - c).max() < 3 / 255


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("colour", [False, True])
def test_write_16bit_round_trip(tmp_path, ext, colour):
    a = RNG.random((12, 20, 3) if colour else (12, 20)).astype(np.float32)
    p = write_image(tmp_path / f"w16{ext}", a, bit_depth=16)
    img = read_image(p, kind="vis")
    assert img.bit_depth == 16 and img.mode == ("RGB" if colour else "L")
    expected = (np.floor(a.astype(np.float64) * 65535 + 0.5) / 65535).astype(np.float32)
    np.testing.assert_array_equal(img.data, expected)
    assert np.abs(img.data - a).max() <= 0.5 / 65535 + 1e-7


def test_write_rejects_bad_requests(tmp_path):
    a = np.zeros((8, 8), np.float32)
    with pytest.raises(ValueError, match="16-bit output"):
        write_image(tmp_path / "x.jpg", a, bit_depth=16)
    with pytest.raises(ValueError, match="extension"):
        write_image(tmp_path / "x.gif", a)
    with pytest.raises(ValueError, match="NaN"):
        write_image(tmp_path / "x.png", np.full((8, 8), np.nan, np.float32))
    with pytest.raises(TypeError):
        write_image(tmp_path / "x.png", np.zeros((8, 8), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    real_encode = aio._encode_into

    def failing_encode(f, q, fmt, ext):
        f.write(b"\x89PNG\r\n\x1a\n partial")  # some bytes are already on disk ...
        f.flush()
        assert len([p for p in tmp_path.iterdir() if p.name.startswith(".out.png.")]) == 1  # ... in a temp file
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(aio, "_encode_into", failing_encode)
    target = tmp_path / "out.png"
    with pytest.raises(OSError, match="simulated"):
        write_image(target, np.zeros((8, 8), np.float32))
    assert list(tmp_path.iterdir()) == []  # neither target nor temp file

    # an existing target keeps its old content
    monkeypatch.setattr(aio, "_encode_into", real_encode)
    write_image(target, np.ones((8, 8), np.float32))
    old = target.read_bytes()
    monkeypatch.setattr(aio, "_encode_into", failing_encode)
    with pytest.raises(OSError):
        write_image(target, np.zeros((8, 8), np.float32))
    assert target.read_bytes() == old and list(tmp_path.iterdir()) == [target]
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0o600


def test_field_round_trip_and_errors(tmp_path):
    f = RNG.standard_normal((2, 6, 9)).astype(np.float32)
    p = write_field(tmp_path / "fields" / "a.npy", f)
    np.testing.assert_array_equal(read_field(p), f)
    np.testing.assert_array_equal(read_field(p, shape=(6, 9)), f)
    assert write_field(tmp_path / "b", torch.from_numpy(f)[None]) == tmp_path / "b.npy"
    np.testing.assert_array_equal(read_field(tmp_path / "b.npy"), f)

    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        write_field(tmp_path / "c.npy", np.zeros((3, 6, 9), np.float32))
    with pytest.raises(FieldError, match="is 9x6 but the image is 8x6"):
        read_field(p, shape=(6, 8))
    np.save(tmp_path / "shape.npy", np.zeros((6, 9), np.float32))
    with pytest.raises(FieldError, match=r"shape \(2, H, W\), got \(6, 9\)"):
        read_field(tmp_path / "shape.npy")
    np.save(tmp_path / "int.npy", np.zeros((2, 6, 9), np.int64))
    with pytest.raises(FieldError, match="dtype int64"):
        read_field(tmp_path / "int.npy")
    bad = f.copy()
    bad[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(FieldError, match="NaN"):
        read_field(tmp_path / "nan.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FieldError, match="pickled"):
        read_field(tmp_path / "obj.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(FieldError, match=str(tmp_path / "junk.npy")):
        read_field(tmp_path / "junk.npy")
    with pytest.raises(FieldError, match="no such file"):
        read_field(tmp_path / "missing.npy")


# ----------------------------------------------------------------------------- pairing


def _touch_images(folder: Path, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        _save(folder / n, np.zeros((8, 8), np.uint8))


def test_pair_folders(tmp_path):
    ir, vis = tmp_path / "ir", tmp_path / "vis"
    _touch_images(ir, ["b.png", "a.tif", "only_ir.png", "dup.png", "dup.jpg", "Case.png", "x.y.png"])
    _touch_images(vis, ["a.jpg", "b.PNG", "only_vis.bmp", "dup.png", "case.png", "x.y.jpeg"])
    (ir / "notes.txt").write_text("ignored")
    (ir / ".hidden.png").write_bytes(b"")
    (vis / "sub").mkdir()

    pairs, unpaired = pair_folders(ir, vis)
    assert [(s, i.name, v.name) for s, i, v in pairs] == [
        ("a", "a.tif", "a.jpg"),
        ("b", "b.png", "b.PNG"),
        ("x.y", "x.y.png", "x.y.jpeg"),
    ]
    assert pairs[0].ir == ir / "a.tif" and pairs[0].vis == vis / "a.jpg"
    text = "\n".join(unpaired)
    assert len(unpaired) == 5, text
    assert f"{ir / 'only_ir.png'}: no visible image with stem 'only_ir' in {vis}" in unpaired
    assert f"{vis / 'only_vis.bmp'}: no infrared image with stem 'only_vis' in {ir}" in unpaired
    assert "stem 'dup' matches several files (dup.jpg, dup.png)" in text
    assert "differs only in case" in text  # Case.png vs case.png: case-sensitive stems

    pairs, unpaired = pair_folders(ir, vis, names=["b.png", "a", "missing", "only_ir"])
    assert [p.stem for p in pairs] == ["a", "b"]
    assert len(unpaired) == 2
    assert any("'missing' is listed" in u for u in unpaired)
    assert any("only_ir" in u for u in unpaired)

    pairs, _ = pair_folders(ir, vis, exts=(".png",))
    assert [p.stem for p in pairs] == ["b", "dup"]  # dup.jpg no longer counts

    with pytest.raises(PairingError, match="does not exist"):
        pair_folders(tmp_path / "nope", vis)


def test_read_split(tmp_path):
    p = tmp_path / "test.txt"
    p.write_text("\ufeff# test split\n\n0001\n0002.png\r\n  dir/0003.JPG  \n# 0004\n0001\nscene.v2\n", encoding="utf-8")
    assert read_split(p) == ["0001", "0002", "0003", "scene.v2"]


def test_load_pair_size_mismatch_and_resize(tmp_path):
    ir_raw = _radiometric16(40, 50)
    ir_p = _save(tmp_path / "ir.png", ir_raw)
    vis = _u8((20, 30, 3))
    vis_p = _save(tmp_path / "vis.png", vis)
    pair = load_pair(ir_p, vis_p)  # sizes differ: always resampled; downsampling: area
    assert load_pair(ir_p, vis_p, resize_ir=True).ir.tobytes() == pair.ir.tobytes()  # the old flag: same
    assert isinstance(pair, Pair) and pair.ir_resized and pair.ir_size == (50, 40)
    assert pair.ir.shape == (20, 30) and pair.ir.dtype == np.float32
    assert pair.ir.min() >= 0 and pair.ir.max() <= 1
    full = read_image(ir_p, kind="ir").data
    np.testing.assert_allclose(pair.ir, np.clip(cv2.resize(full, (30, 20), interpolation=cv2.INTER_AREA), 0, 1))
    assert pair.size == (30, 20) and pair.is_colour and pair.ir_bit_depth == 16 and pair.vis_bit_depth == 8
    assert any("50x40 resampled onto the 30x20 visible grid" in n for n in pair.notes)

    small_ir = _save(tmp_path / "small_ir.png", _u8((10, 15)))  # upsampling: bicubic, clipped
    pair = load_pair(small_ir, vis_p, resize_ir=True)
    src = read_image(small_ir, kind="ir").data
    np.testing.assert_allclose(pair.ir, np.clip(cv2.resize(src, (30, 20), interpolation=cv2.INTER_CUBIC), 0, 1))
    assert pair.ir.min() >= 0 and pair.ir.max() <= 1


def test_field_to_ir_coordinates_maps_back_to_raw_pixels():
    """The README convention: visible pixel (x, y) with field (dx, dy) is raw IR pixel
    ((x + dx + 0.5) * ir_w / W - 0.5, (y + dy + 0.5) * ir_h / H - 0.5); identity for equal sizes."""
    from alignfuse.io import field_to_ir_coordinates, resample_to

    field = np.zeros((2, 20, 30), np.float32)
    field[0], field[1] = 1.5, -2.0
    c = field_to_ir_coordinates(field, (30, 20))
    assert np.allclose(c[0, 3, 4], 5.5) and np.allclose(c[1, 3, 4], 1.0)
    c = field_to_ir_coordinates(np.zeros((2, 20, 30)), (60, 40))  # raw IR twice the size
    assert np.allclose(c[:, 0, 0], [0.5, 0.5]) and np.allclose(c[:, 19, 29], [58.5, 38.5])
    # a bright raw pixel lands where the mapping says after resampling
    raw = np.zeros((40, 60), np.float32)
    raw[20:24, 30:34] = 1.0  # centre (31.5, 21.5) in raw pixels
    small = resample_to(raw, (30, 20))
    ys, xs = np.nonzero(small > 0.5)
    cx, cy = xs.mean(), ys.mean()
    back = field_to_ir_coordinates(np.zeros((2, 20, 30)), (60, 40))
    assert abs(np.interp(cx, np.arange(30), back[0, 0]) - 31.5) < 0.3
    assert abs(np.interp(cy, np.arange(20), back[1, :, 0]) - 21.5) < 0.3


def test_load_pair(tmp_path):
    (tmp_path / "ir").mkdir()
    ir_p = _save(tmp_path / "ir" / "s1.png", _u8((16, 24)))
    vis = _u8((16, 24, 3))
    vis_p = _save(tmp_path / "s1.jpg", vis, quality=95)
    pair = load_pair(ir_p, vis_p)
    assert pair.name == "s1" and pair.ir_name == "s1.png" and pair.vis_name == "s1.jpg"
    assert pair.ir.shape == (16, 24) and pair.vis.shape == (16, 24, 3) and not pair.ir_resized
    y, cb, cr = rgb_to_ycbcr(pair.vis)
    np.testing.assert_array_equal(pair.vis_y, y)
    np.testing.assert_array_equal(pair.vis_cb, cb)

    grey_p = _save(tmp_path / "g.png", _u8((16, 24)))
    gp = load_pair(ir_p, grey_p)
    assert gp.vis_cb is None and gp.vis_cr is None and not gp.is_colour
    np.testing.assert_array_equal(gp.vis_y, gp.vis)


def test_dead_and_duplicate_helpers_stay_removed():
    """Unused io.recombine / io.from_tensor / checkpoints.shipped_weights, and RFVIFFuser (a copy of NetFuser)."""
    from alignfuse import checkpoints
    from alignfuse.models import rfvif

    assert not {"recombine", "from_tensor"} & (set(dir(aio)) | set(aio.__all__))
    assert not hasattr(checkpoints, "shipped_weights") and not hasattr(rfvif, "RFVIFFuser")


# ----------------------------------------------------------------------------- found by tests/test_fuzz.py


def test_native_decoder_messages_stay_off_the_terminal(tmp_path, capfd):
    """A damaged file is one error line: OpenCV's log and libpng's own warnings (printed straight to file
    descriptor 2) used to follow it on the terminal."""
    zero_wide = tmp_path / "zero.png"
    zero_wide.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 16, 8, 0, 0, 0, 0))
                          + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b""))
    rgb16 = tmp_path / "rgb16.png"
    assert cv2.imwrite(str(rgb16), RNG.integers(0, 65536, size=(32, 32, 3)).astype(np.uint16))
    truncated = tmp_path / "truncated16.png"
    truncated.write_bytes(rgb16.read_bytes()[:900])  # Pillow opens it, OpenCV decodes it
    tiff = tmp_path / "garbage.tif"
    tiff.write_bytes(b"II*\x00" + RNG.integers(0, 256, 600, dtype=np.uint8).tobytes())
    capfd.readouterr()
    for path in (zero_wide, truncated, tiff):
        with pytest.raises(ImageReadError) as e:
            read_image(path)
        assert str(e.value).startswith(f"{path}: ")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert "truncated" in str(pytest.raises(ImageReadError, read_image, truncated).value)


def test_decoder_warnings_become_notes_on_the_file(tmp_path):
    """Pillow's warnings (here corrupt EXIF in a readable JPEG) were printed as anonymous warning lines."""
    exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00" + struct.pack("<H", 5) + b"\x12\x01\x03\x00\x01\x00\x00\x00"
    Image.fromarray(_u8((16, 16, 3))).save(tmp_path / "exif.jpg", exif=exif)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing escapes as a warning
        img = read_image(tmp_path / "exif.jpg")
    assert img.data.shape == (16, 16, 3) and any("Corrupt EXIF" in n for n in img.notes)


def test_16bit_grey_alpha_png_stays_grey(tmp_path):
    """Pillow reports a 16-bit LA PNG as RGBA and OpenCV expands it to four channels: it came back as RGB."""
    grey = RNG.integers(0, 65536, size=(12, 10)).astype(np.uint16)
    alpha = np.full_like(grey, 65535)
    rows = b"".join(b"\x00" + np.stack([grey[y], alpha[y]], -1).astype(">u2").tobytes() for y in range(12))
    path = tmp_path / "la16.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 10, 12, 16, 4, 0, 0, 0))
                     + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))
    img = read_image(path, kind="vis", norm="fixed")
    assert img.mode == "L" and img.bit_depth == 16 and "alpha channel dropped" in img.notes
    np.testing.assert_array_equal(img.data, grey.astype(np.float32) / np.float32(65535))


def _tiff(w: int, h: int, data: bytes, bits: int, sample_format: int, spp: int = 1) -> bytes:
    """One-strip uncompressed little-endian TIFF (Pillow cannot write these sample formats)."""
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, bits), (259, 3, 1, 1), (262, 3, 1, 1 if spp == 1 else 2),
               (273, 4, 1, 0), (277, 3, 1, spp), (278, 4, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1),
               (339, 3, 1, sample_format)]
    offset = 8 + 2 + 12 * len(entries) + 4
    ifd = b"".join(struct.pack("<HHI", t, typ, n) + (struct.pack("<HH", offset if t == 273 else v, 0) if typ == 3
                   else struct.pack("<I", offset if t == 273 else v)) for t, typ, n, v in entries)
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)) + ifd + struct.pack("<I", 0) + data


def test_unsigned_32bit_and_signed_16bit_rgb_tiff(tmp_path):
    """Pillow reads unsigned 32-bit samples as signed: values >= 2**31 wrapped to negative ones (silently, the
    image came out scrambled). A signed 16-bit RGB TIFF, which only OpenCV decodes, was 'unsupported'."""
    ramp = (np.arange(12 * 10, dtype=np.float64).reshape(12, 10) * 3.5e7).astype("<u4")  # up to 4.2e9
    (tmp_path / "u32.tif").write_bytes(_tiff(10, 12, ramp.tobytes(), 32, 1))
    img = read_image(tmp_path / "u32.tif", kind="ir")
    np.testing.assert_allclose(img.data, ramp / ramp.max(), atol=1e-6)
    signed = np.stack([ramp.astype(np.int64) // 140000 - 15000] * 3, -1).astype("<i2")
    (tmp_path / "s16.tif").write_bytes(_tiff(10, 12, signed.tobytes(), 16, 2, spp=3))
    vis = read_image(tmp_path / "s16.tif", kind="vis")
    assert vis.mode == "RGB" and vis.data.min() == 0.0 and vis.data.max() == 1.0
    assert np.all(np.diff(vis.data[..., 0].ravel()) >= 0)  # order kept: no wrap-around


def test_broken_symlink_is_named_as_such(tmp_path):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    for name in ("loop.png", "dangling.png"):
        with pytest.raises(ImageReadError, match=f"{name}: broken symbolic link"):
            read_image(tmp_path / name)


def test_outputs_that_cannot_be_written_are_refused_up_front_and_named(tmp_path):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="folder.png: is a folder"):
        aio.check_output_path(tmp_path / "folder.png")
    with pytest.raises(UserError, match=r"file/out.png: cannot be written: .*file is a file, not a folder"):
        aio.check_output_path(tmp_path / "file" / "out.png")
    assert aio.check_output_path(tmp_path / "new" / "deeper" / "out.png") == "PNG"  # missing folders are made
    with pytest.raises(UserError, match="not a file name"):
        aio.field_path(Path("."))
    with pytest.raises(UserError, match="not a file name for a field"):  # "DIR/" names a folder
        aio.field_path(f"{tmp_path}/new_folder/")
    assert aio.field_path(tmp_path / "f") == tmp_path / "f.npy"
    # when a write fails anyway, the error names the target, not the hidden temporary file beside it
    with pytest.raises(OSError) as e:
        aio._atomic_write(tmp_path / "folder.png", lambda f: f.write(b"data"))
    assert e.value.filename == str(tmp_path / "folder.png") and ".tmp" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.png"]  # no temporary file left


def test_matrix_to_raw_ir_agrees_with_the_field_mapping():
    # a homography on the visible grid (onto the resampled IR) as a field, read back in raw IR pixels both ways
    vis_size, ir_size = (50, 30), (64, 51)
    m = np.array([[0.9, 0.05, 3.0], [-0.02, 1.1, -2.0], [1e-4, -2e-4, 1.0]])
    ys, xs = np.mgrid[0:30, 0:50].astype(np.float64)
    q = m @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    field = np.stack([(q[0] / q[2]).reshape(30, 50) - xs, (q[1] / q[2]).reshape(30, 50) - ys])
    expected = aio.field_to_ir_coordinates(field, ir_size)
    raw = aio.matrix_to_raw_ir(m, vis_size, ir_size)
    r = raw @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    got = np.stack([(r[0] / r[2]).reshape(30, 50), (r[1] / r[2]).reshape(30, 50)])
    np.testing.assert_allclose(got, expected, atol=1e-9)
    assert raw[2, 2] == 1.0 and not np.allclose(raw, m)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_check_writable_probes_the_folder_where_permissions_say_yes(monkeypatch):
    # permission bits can say yes (root) where no file can be created (/proc): the probe before a run catches it
    monkeypatch.setattr(aio.os, "access", lambda *args, **kwargs: True)
    aio.check_writable(Path("/proc/alignfuse-test.png"))  # without the probe (a write's own check) it passes
    with pytest.raises(UserError, match="cannot be written"):
        aio.check_writable(Path("/proc/alignfuse-test.png"), probe=True)
