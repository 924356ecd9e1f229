"""Reading image files for predict: any size and common format, to CIFAR's 32x32 RGB uint8.

An image (PNG, JPEG, BMP, GIF, WebP, TIFF; colour, grayscale, palette, with alpha) is read
with Pillow, turned upright (EXIF), converted to RGB (a grayscale image repeats its one
channel) and brought to CIFAR's 32x32: area average when shrinking, bilinear when enlarging,
the whole image, no crop. No torch here: a file that cannot be read is refused at once.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import ConfigError

CIFAR_SIZE = 32


class ImageError(ConfigError):
    """An image file that cannot be read (missing, not an image, damaged)."""


def read_image(path: Path) -> np.ndarray:
    """(3, 32, 32) uint8 RGB of an image file; ImageError naming the file when it cannot be read."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file not found")
    if not path.is_file():
        raise ImageError(f"{path}: not a file")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated or damaged file fails here, not later
            im = ImageOps.exif_transpose(im)
            if im.mode.startswith("I;16"):  # 16-bit grayscale: keep the top 8 bits, not a clipped white
                im = Image.fromarray((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8), mode="L")
            rgb = im.convert("RGB")
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read (PNG, JPEG, BMP, GIF, WebP, TIFF, ...)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: refused: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{path}: damaged or truncated image ({str(exc).splitlines()[0][:120] or type(exc).__name__})") from None
    if rgb.size != (CIFAR_SIZE, CIFAR_SIZE):
        shrinking = rgb.width >= CIFAR_SIZE and rgb.height >= CIFAR_SIZE
        rgb = rgb.resize((CIFAR_SIZE, CIFAR_SIZE), Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR)
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
