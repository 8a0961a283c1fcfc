"""Displacement fields: the one place where pixel fields meet ``grid_sample``.

Convention (used everywhere in alignfuse):

* A field is a float tensor ``(B, 2, H, W)`` (or a numpy array ``(2, H, W)``) of pixel
  displacements, channel 0 = dx (columns), channel 1 = dy (rows).
* Warping ``moving`` with ``field`` gives ``aligned[y, x] = moving[y + dy, x + dx]``
  (bilinear, pixel centres at integer coordinates, i.e. ``align_corners=True``).
* Samples that fall outside the moving image take the nearest border value (``border``)
  unless another padding mode is asked for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.transform import remap
from kornia.geometry import create_meshgrid

__all__ = [
    "warp",
    "compose",
    "upsample_field",
    "resize_field",
    "resize_image",
    "invert",
    "field_from_affine",
    "jacobian_determinant",
    "folding_fraction",
    "magnitude",
    "check_field",
    "sample",
    "field_from_matrix",
    "inside",
    "affine_grid",
    "sample_grid",
    "grid_to_field",
    "pixel_to_grid_scale",
]


def check_field(field: torch.Tensor, image: torch.Tensor | None = None) -> None:
    """Raise ``ValueError`` unless ``field`` is ``(B, 2, H, W)`` (and matches ``image``'s B, H, W)."""
    if field.ndim != 4 or field.shape[1] != 2:
        raise ValueError(f"field must have shape (B, 2, H, W), got {tuple(field.shape)}")
    if image is not None:
        if image.ndim != 4:
            raise ValueError(f"image must have shape (B, C, H, W), got {tuple(image.shape)}")
        if image.shape[0] != field.shape[0] or image.shape[-2:] != field.shape[-2:]:
            raise ValueError(
                f"image {tuple(image.shape)} and field {tuple(field.shape)} differ in batch or size"
            )


def _base_grid(field: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates ``(1, 2, H, W)`` (x, y) on the field's device and dtype."""
    h, w = field.shape[-2:]
    grid = create_meshgrid(h, w, normalized_coordinates=False, device=field.device, dtype=field.dtype)
    return grid.permute(0, 3, 1, 2)


def warp(
    moving: torch.Tensor,
    field: torch.Tensor,
    mode: str = "bilinear",
    padding_mode: str = "border",
) -> torch.Tensor:
    """Resample ``moving`` (B, C, H, W) with the pixel field (B, 2, H, W): ``out[y,x] = moving[y+dy, x+dx]``."""
    check_field(field, moving)
    coords = _base_grid(field) + field
    return remap(
        moving,
        coords[:, 0],
        coords[:, 1],
        mode=mode,
        padding_mode=padding_mode,
        align_corners=True,
        normalized_coordinates=False,
    )


def sample(image: torch.Tensor, coords: torch.Tensor, mode: str = "bilinear",
           padding_mode: str = "border") -> torch.Tensor:
    """``out[b, :, y, x] = image[b, :, coords[b, 1, y, x], coords[b, 0, y, x]]``: image (B, C, h, w) read at absolute
    pixel coordinates (B, 2, H, W) (x, y), pixel centres at integers; the output grid may differ from the input's."""
    if coords.ndim != 4 or coords.shape[1] != 2 or coords.shape[0] != image.shape[0]:
        raise ValueError(f"coords must be (B, 2, H, W) with B = {image.shape[0]}, got {tuple(coords.shape)}")
    return remap(image, coords[:, 0], coords[:, 1], mode=mode, padding_mode=padding_mode, align_corners=True,
                 normalized_coordinates=False)


def inside(coords: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) float mask of the coordinates (B, 2, H, W) that fall inside an image of ``size = (h, w)``."""
    h, w = size
    x, y = coords[:, 0:1], coords[:, 1:2]
    return ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)).to(coords.dtype)


def field_from_matrix(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel field (B, 2, H, W) of 3x3 sampling matrices (B, 3, 3): output pixel p samples the moving image at
    ``matrix @ p`` (homogeneous, divided by the third coordinate), so the field is ``matrix @ p - p``."""
    if matrix.ndim != 3 or matrix.shape[-2:] != (3, 3):
        raise ValueError(f"matrix must be (B, 3, 3), got {tuple(matrix.shape)}")
    grid = create_meshgrid(height, width, normalized_coordinates=False, device=matrix.device, dtype=matrix.dtype)
    hom = torch.cat([grid, torch.ones_like(grid[..., :1])], dim=-1).reshape(1, -1, 3)  # (1, HW, 3)
    mapped = hom @ matrix.transpose(1, 2)  # (B, HW, 3)
    den = mapped[..., 2:]
    den = torch.where(den.abs() < 1e-12, torch.full_like(den, 1e-12), den)
    field = mapped[..., :2] / den - hom[..., :2]
    return field.transpose(1, 2).reshape(matrix.shape[0], 2, height, width)


# Normalised sampling grids (``grid_sample``'s [-1, 1] units, ``align_corners=False``: pixel x sits at
# (2 x + 1) / w - 1). Registrars that optimise affine parameters in these units (the MIND registrar) use the
# four functions below; a grid and its pixel field (:func:`grid_to_field`) sample the same image values.


def pixel_to_grid_scale(size: tuple[int, int], ref: torch.Tensor) -> torch.Tensor:
    """(1, 2, 1, 1) factors turning pixel displacements (dx, dy) on a ``size = (h, w)`` grid into grid units."""
    return torch.tensor([2.0 / size[1], 2.0 / size[0]], device=ref.device, dtype=ref.dtype).view(1, 2, 1, 1)


def affine_grid(theta: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Normalised sampling grid (B, h, w, 2) of affine maps ``theta`` (B, 2, 3) in grid units."""
    return F.affine_grid(theta, [theta.shape[0], 1, *size], align_corners=False)


def sample_grid(image: torch.Tensor, grid: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
    """image (B, C, h, w) read bilinearly at a normalised grid (B, H, W, 2)."""
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def grid_to_field(grid: torch.Tensor) -> torch.Tensor:
    """Normalised grid (B, h, w, 2) on its own output grid -> the pixel field (B, 2, h, w) of :func:`warp`."""
    b, h, w, _ = grid.shape
    identity = affine_grid(torch.eye(2, 3, dtype=grid.dtype, device=grid.device).expand(b, 2, 3), (h, w))
    return (grid - identity).permute(0, 3, 1, 2) / pixel_to_grid_scale((h, w), grid)


def compose(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Field equal to warping with ``first`` and then warping the result with ``second``.

    ``warp(warp(m, first), second) ~= warp(m, compose(first, second))`` (up to resampling).
    Both fields are (B, 2, H, W) on the same grid.
    """
    check_field(first)
    check_field(second)
    return second + warp(first, second, padding_mode="border")


def resize_field(field: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample a field to ``size = (H, W)`` and rescale its values so it stays in target pixels.

    Pixel centres are matched corner-to-corner (``align_corners=True``), which is the grid
    convention of :func:`warp`: x_new = x_old * (W_new - 1) / (W_old - 1).
    """
    check_field(field)
    h0, w0 = field.shape[-2:]
    h1, w1 = size
    if (h0, w0) == (h1, w1):
        return field
    out = F.interpolate(field, size=(h1, w1), mode="bilinear", align_corners=True)
    sx = (w1 - 1) / max(w0 - 1, 1)
    sy = (h1 - 1) / max(h0 - 1, 1)
    scale = torch.tensor([sx, sy], dtype=field.dtype, device=field.device).view(1, 2, 1, 1)
    return out * scale


upsample_field = resize_field


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, *size): antialiased bilinear (``align_corners=False``), the image as is when
    already that size. How pipelines shrink images to the registration working size (and training mimics it)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def invert(field: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """Approximate inverse by fixed-point iteration ``v <- -u(x + v)``.

    For a field ``u`` (aligned = warp(moving, u)) the result ``v`` satisfies
    ``warp(aligned, v) ~= moving`` where ``u`` is smooth and invertible (|grad u| < 1).
    """
    check_field(field)
    inv = -field
    for _ in range(iterations):
        inv = -warp(field, inv, padding_mode="border")
    return inv


def field_from_affine(matrix: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel field of an affine sampling map.

    ``matrix`` (B, 2, 3) maps output pixel (x, y, 1) to the moving-image position it samples,
    so ``aligned[p] = moving[matrix @ p]`` and the field is ``matrix @ p - p``. Returns (B, 2, H, W).
    """
    if matrix.ndim != 3 or matrix.shape[-2:] != (2, 3):
        raise ValueError(f"matrix must be (B, 2, 3), got {tuple(matrix.shape)}")
    grid = create_meshgrid(height, width, normalized_coordinates=False, device=matrix.device, dtype=matrix.dtype)
    ones = torch.ones_like(grid[..., :1])
    hom = torch.cat([grid, ones], dim=-1).reshape(1, -1, 3)  # (1, HW, 3)
    mapped = hom @ matrix.transpose(1, 2)  # (B, HW, 2)
    field = mapped - hom[..., :2]
    return field.transpose(1, 2).reshape(matrix.shape[0], 2, height, width)


def jacobian_determinant(field: torch.Tensor) -> torch.Tensor:
    """Determinant of the Jacobian of the map ``p -> p + u(p)``, (B, 1, H, W), central differences."""
    check_field(field)
    du_dx = torch.gradient(field, dim=3)[0]
    du_dy = torch.gradient(field, dim=2)[0]
    a = 1.0 + du_dx[:, 0]
    b = du_dy[:, 0]
    c = du_dx[:, 1]
    d = 1.0 + du_dy[:, 1]
    return (a * d - b * c).unsqueeze(1)


def folding_fraction(field: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels (per batch item, shape (B,)) where the Jacobian determinant is <= 0."""
    det = jacobian_determinant(field)
    return (det <= 0).flatten(1).float().mean(dim=1)


def magnitude(field: torch.Tensor) -> torch.Tensor:
    """Per-pixel displacement length in pixels, (B, 1, H, W)."""
    check_field(field)
    return field.pow(2).sum(dim=1, keepdim=True).sqrt()
