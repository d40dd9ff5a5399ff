"""Checking and loading the image files that records point to."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from PIL import Image

# Decompression-bomb guard: a small file can claim a huge canvas; refuse before decoding.
MAX_IMAGE_PIXELS = 50_000_000


def check_image(path: str | os.PathLike[str]) -> str | None:
    """Return why `path` is not a usable image, or None if PIL can open and verify it.

    Cheap enough to run on every image before any model work: `verify()` checks the
    file's structure (e.g. PNG chunk checksums) without decoding every pixel.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return f"image file not found: {p}"
    except OSError as e:
        return f"cannot read image file {p}: {e.strerror or e}"
    if not p.is_file():
        return f"image path is not a file: {p}"
    if size == 0:
        return f"image file is empty (0 bytes): {p}"
    try:
        with warnings.catch_warnings():
            # PIL warns on big images; we apply our own, lower limit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    return (
                        f"image is too large: {w}x{h} = {w * h:,} pixels "
                        f"(limit {MAX_IMAGE_PIXELS:,}): {p}"
                    )
                im.verify()
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"cannot open image ({type(e).__name__}: {e}): {p}"
    return None


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image, decode it fully and return it as RGB (as Qwen's own VL code does).

    Raises OSError naming the path if the file cannot be decoded or is over the pixel limit.
    """
    p = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h <= MAX_IMAGE_PIXELS:
                    im.load()
                    # convert() returns a new, fully loaded image that outlives the file.
                    return im.convert("RGB")
    except Exception as e:  # name the file: PIL's own messages often do not
        raise OSError(f"cannot load image {p}: {type(e).__name__}: {e}") from e
    raise OSError(f"image is too large: {w}x{h} pixels (limit {MAX_IMAGE_PIXELS:,}): {p}")
