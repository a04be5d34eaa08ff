"""Reading image files the same way in every task: as displayed, in 8 bits, checked up front.

Users bring photos from phones (EXIF-rotated JPEGs, CMYK JPEGs), exports from annotation tools
(PNGs in 8 or 16 bits, grayscale, with alpha) and camera or microscope dumps (BMP, TIFF, 32-bit
float TIFF, WebP). `read_image` turns each of them into the same thing, a `uint8` array of the
image as a viewer displays it:

- the EXIF orientation is applied (boxes are drawn on the displayed image);
- 16-bit samples are scaled from `[0, 65535]` to `[0, 255]` (not clipped at 255);
- floating-point samples in `[0, 1]` are scaled by 255, others are taken as 8-bit values and
  clipped to `[0, 255]` (NaN reads as 0);
- alpha is dropped (the colour under it is kept), CMYK and palettes become RGB;
- grayscale becomes RGB by repeating the channel, and RGB becomes grayscale by ITU-R 601 luma.

`inspect_image` decodes a file once, fully, before any training, and says what is wrong with it
(missing, not an image, truncated) or gives its displayed size. This module needs only numpy and
Pillow.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: File name endings read as images when a folder is listed.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_EXIF_ORIENTATION = 0x0112
# EXIF orientations 5-8 turn the image by 90 degrees: width and height swap.
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
# Errors Pillow raises for files it cannot read: unknown format, truncated or corrupt data,
# decompression bombs (a ValueError subclass in some versions), unsupported modes.
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)


class ImageReadError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """The image at `path` as displayed: `uint8` of shape `[height, width, channels]`.

    Args:
        path: an image file in any format Pillow decodes (PNG, JPEG, BMP, TIFF, WebP, GIF).
        channels: 3 for RGB, 1 for grayscale.

    Returns:
        The pixels with the EXIF orientation applied, converted to 8 bits per sample.

    Raises:
        ImageReadError: the file is missing or cannot be decoded.
        ValueError: `channels` is not 1 or 3.

    Example:
        >>> read_image("photo.jpg").shape  # a 4000x3000 photo taken in portrait
        (4000, 3000, 3)
    """
    if channels not in (1, 3):
        raise ValueError(f"Expected channels 1 or 3. Received: channels={channels!r}.")
    path = Path(path)
    try:
        with Image.open(path) as image:
            image = _to_eight_bits(ImageOps.exif_transpose(image))
            image = image.convert("L" if channels == 1 else "RGB")
            pixels = np.asarray(image)
    except FileNotFoundError:
        raise ImageReadError(f"Image file not found. Received: file={str(path)!r}.") from None
    except _DECODE_ERRORS as error:
        raise ImageReadError(
            f"Cannot read image {path} ({type(error).__name__}: {error}). Remove or replace the "
            f"file. Received: file={str(path)!r}."
        ) from None
    return pixels[..., None] if channels == 1 else pixels


def read_resized(path: str | os.PathLike, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """`read_image(path, channels)` resized (bilinear) to `size` = `(height, width)`."""
    pixels = read_image(path, channels)
    if pixels.shape[:2] == tuple(size):
        return pixels
    mode = "L" if channels == 1 else "RGB"
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
    resized = np.asarray(image.resize((int(size[1]), int(size[0])), Image.BILINEAR))
    return resized[..., None] if channels == 1 else resized


def inspect_image(path: str | os.PathLike) -> tuple[str | None, tuple[int, int] | None]:
    """`(problem, (width, height))`: what is wrong with the file, or its displayed size.

    The whole file is decoded (a JPEG at 1/8 scale, which still reads every coded block), so a
    truncated file is caught here rather than decoded as grey during training; the sample
    conversion of `read_image` runs too. Nothing is kept in memory.
    """
    path = Path(path)
    if not path.is_file():
        return "image file is missing", None
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.format == "JPEG":
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            _to_eight_bits(image)
    except _DECODE_ERRORS as error:
        return f"image file cannot be read ({type(error).__name__}: {error})", None
    if orientation in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return None, (int(width), int(height))


def list_images(directory: str | os.PathLike) -> list[Path]:
    """The image files directly in `directory` (by `IMAGE_SUFFIXES`), sorted by name."""
    return sorted(
        p
        for p in Path(directory).iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


# === Internals ===


def _to_eight_bits(image: Image.Image) -> Image.Image:
    """`image` in a mode `convert("RGB" | "L")` maps faithfully (8 bits per sample)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        samples = np.asarray(image, dtype=np.float64)
        return Image.fromarray(_scaled(samples / 65535.0 * 255.0), "L")
    if image.mode == "F":
        samples = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
        finite = samples[np.isfinite(samples)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            samples = samples * 255.0
        return Image.fromarray(_scaled(samples), "L")
    if image.mode in ("RGBA", "LA", "PA", "P", "RGBX", "RGBa", "La"):
        return image.convert("RGBA").convert("RGB") if image.mode != "LA" else image.convert("L")
    return image


def _scaled(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples), 0, 255).astype(np.uint8)


__all__ = [
    "IMAGE_SUFFIXES",
    "ImageReadError",
    "inspect_image",
    "list_images",
    "read_image",
    "read_resized",
]
