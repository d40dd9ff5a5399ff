"""Images as `data:` URIs, so the page needs no other file and no network to be viewed.

Sample images come from user files: each is checked as `score` checks images (so a
decompression bomb or a broken file is refused, not decoded), shrunk to a thumbnail and
re-encoded as PNG by PIL. The page never carries the user's bytes, only pixels PIL wrote.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from pathlib import Path

from stepsift.data import EmbeddedImage, check_image, load_image

THUMBNAIL_SIDE = 320  # pixels kept of a sample image (the page shows it smaller)
DISPLAY_BOX = 160  # CSS pixels a sample image is shown in


@dataclass(frozen=True)
class Embedded:
    uri: str  # data:image/png;base64,...
    width: int  # CSS pixels to show it at
    height: int


def png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def embed_image(path: Path | EmbeddedImage, box: int = DISPLAY_BOX) -> Embedded | str:
    """A thumbnail of the image at `path` (or embedded in a table row), or why it cannot
    be shown."""
    problem = check_image(path)
    if problem is not None:
        return problem
    try:
        image = load_image(path)
    except OSError as e:
        return str(e)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    w, h = image.size
    # small images (digits are 68x32) are scaled up by a whole factor so they stay crisp
    scale = box / max(w, h)
    if scale >= 2:
        scale = float(int(scale))
    return Embedded(png_uri(buf.getvalue()), max(1, round(w * scale)), max(1, round(h * scale)))
