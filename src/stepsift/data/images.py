"""Checking and loading the images of records: files they point to, or images embedded in
the data file itself (a Parquet/Arrow `{"bytes", "path"}` struct, as `datasets` stores its
Image feature)."""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from PIL import Image

# Decompression-bomb guard: a small file can claim a huge canvas; refuse before decoding.
MAX_IMAGE_PIXELS = 50_000_000


@dataclass(frozen=True)
class EmbeddedImage:
    """An image whose encoded bytes are stored in the data file (one row's struct)."""

    data: bytes = field(repr=False)
    name: str  # where it is stored, for messages: file, row group, row and column

    def open(self) -> IO[bytes]:
        return io.BytesIO(self.data)

    def __str__(self) -> str:
        return self.name


ImageSource = Path | EmbeddedImage


def check_image(path: str | os.PathLike[str] | EmbeddedImage) -> str | None:
    """Return why `path` is not a usable image, or None if PIL can open, verify and decode it.

    Run on every image before any model work, so that `load_image` cannot fail later:
    `verify()` checks the file's structure (e.g. PNG chunk checksums), then the pixel data
    is decoded (a few ms per typical image; JPEGs at reduced scale).
    """
    if isinstance(path, EmbeddedImage):
        if not path.data:
            return f"embedded image is empty (0 bytes): {path}"
        return _check_decodable(path.open, f"embedded image of {len(path.data):,} bytes")
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
    return _check_decodable(lambda: p, shown)


def _check_decodable(open_source, shown: str) -> str | None:
    """Why the image `open_source()` gives PIL is not usable, or None."""
    try:
        with warnings.catch_warnings():
            # PIL warns on big images (we apply our own, lower limit below) and on odd
            # metadata; this function's answer is the verdict, so it stays quiet.
            warnings.simplefilter("ignore")
            with Image.open(open_source()) as im:
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
            with Image.open(open_source()) as im:
                im.draft(None, (1, 1))
                im.load()
    except Image.DecompressionBombError as e:  # over twice PIL's own limit: open() refuses
        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(m[1]):,} pixels" if m else str(e)
        return f"image is too large: {size} (limit {MAX_IMAGE_PIXELS:,}): {shown}"
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        why = re.sub(r"cannot identify image file <_io\.BytesIO object at 0x[0-9a-f]+>",
                     "not a known image format", str(e))  # fmt: skip
        return f"cannot open image ({type(e).__name__}: {why}): {shown}"
    return None


def _shown(p: Path, limit: int = 300) -> str:
    """The path for a message; a hostile data file can make it megabytes long."""
    s = str(p)
    return s if len(s) <= limit else f"{s[: limit // 2]}...{s[-limit // 2 :]}"


def load_image(path: str | os.PathLike[str] | EmbeddedImage) -> Image.Image:
    """Open an image, decode it fully and return it as RGB (as Qwen's own VL code does).

    Raises OSError naming the path if the file cannot be decoded or is over the pixel limit.
    """
    p = path if isinstance(path, EmbeddedImage) else Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p.open() if isinstance(p, EmbeddedImage) else p) as im:
                w, h = im.size
                if w * h <= MAX_IMAGE_PIXELS:
                    im.load()
                    # convert() returns a new, fully loaded image that outlives the file.
                    return im.convert("RGB")
    except Exception as e:  # name the file: PIL's own messages often do not
        raise OSError(f"cannot load image {p}: {type(e).__name__}: {e}") from e
    raise OSError(f"image is too large: {w}x{h} pixels (limit {MAX_IMAGE_PIXELS:,}): {p}")
