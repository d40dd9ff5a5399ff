"""Checking and loading the image files that records point to."""

from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path

from PIL import Image

# Decompression-bomb guard: a small file can claim a huge canvas; refuse before decoding.
MAX_IMAGE_PIXELS = 50_000_000


def check_image(path: str | os.PathLike[str]) -> str | None:
    """Return why `path` is not a usable image, or None if PIL can open, verify and decode it.

    Run on every image before any model work, so that `load_image` cannot fail later:
    `verify()` checks the file's structure (e.g. PNG chunk checksums), then the pixel data
    is decoded (a few ms per typical image; JPEGs at reduced scale).
    """
    p = Path(path)
    shown = _shown(p)
    try:
        st = p.stat()
    except FileNotFoundError:
        return f"image file not found: {shown}"
    except (OSError, ValueError) as e:  # ValueError: a NUL or unencodable character
        return f"cannot read image file {shown}: {getattr(e, 'strerror', None) or e}"
    if not stat.S_ISREG(st.st_mode):  # a folder, FIFO or device: never open those
        return f"image path is not a file: {shown}"
    if st.st_size == 0:
        return f"image file is empty (0 bytes): {shown}"
    try:
        with warnings.catch_warnings():
            # PIL warns on big images (we apply our own, lower limit below) and on odd
            # metadata; this function's answer is the verdict, so it stays quiet.
            warnings.simplefilter("ignore")
            with Image.open(p) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    return (
                        f"image is too large: {w}x{h} = {w * h:,} pixels "
                        f"(limit {MAX_IMAGE_PIXELS:,}): {shown}"
                    )
                im.verify()
            # verify() decodes no pixel data, so a truncated JPEG, GIF, BMP or TIFF passes it
            # and fails only later, in load_image, mid-run. Decode it now; a JPEG at 1/8 scale
            # (draft) still reads its whole data stream, at about half the cost.
            with Image.open(p) as im:
                im.draft(None, (1, 1))
                im.load()
    except Image.DecompressionBombError as e:  # over twice PIL's own limit: open() refuses
        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(m[1]):,} pixels" if m else str(e)
        return f"image is too large: {size} (limit {MAX_IMAGE_PIXELS:,}): {shown}"
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"cannot open image ({type(e).__name__}: {e}): {shown}"
    return None


def _shown(p: Path, limit: int = 300) -> str:
    """The path for a message; a hostile data file can make it megabytes long."""
    s = str(p)
    return s if len(s) <= limit else f"{s[: limit // 2]}...{s[-limit // 2 :]}"


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
