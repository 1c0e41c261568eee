"""Cheap image probing (size from the header, truncation check) and decoding with OpenCV.

Readers need every image's size and must flag missing or truncated files without decoding
thousands of 2048x2048 images, so PNG and JPEG headers are parsed directly.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
# Stored pixel layout, never EXIF-rotated: headers, annotation sizes and pixels must agree.
IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


class ImageProblem(Exception):
    """Why an image cannot be used: `kind` is 'missing_image' or 'unreadable_image'.

    Raised by `probe_image` and turned into a `Problem` by the readers.
    """

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def _png_size(head: bytes, tail: bytes) -> tuple[int, int]:
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise ImageProblem("PNG header is damaged", "unreadable_image")
    if not tail.endswith(PNG_END):
        raise ImageProblem("PNG is truncated (no IEND chunk at the end)", "unreadable_image")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def _jpeg_size(path: Path, tail: bytes) -> tuple[int, int]:
    if b"\xff\xd9" not in tail:
        raise ImageProblem("JPEG is truncated (no end-of-image marker)", "unreadable_image")
    with path.open("rb") as f:
        f.seek(2)
        while True:
            byte = f.read(1)
            while byte and byte != b"\xff":
                byte = f.read(1)
            while byte == b"\xff":
                byte = f.read(1)
            if not byte:
                raise ImageProblem("JPEG has no frame header", "unreadable_image")
            marker = byte[0]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                continue
            length_bytes = f.read(2)
            if len(length_bytes) < 2:
                raise ImageProblem("JPEG header is damaged", "unreadable_image")
            length = struct.unpack(">H", length_bytes)[0]
            if marker in JPEG_SOF:
                frame = f.read(5)
                if len(frame) < 5:
                    raise ImageProblem("JPEG frame header is damaged", "unreadable_image")
                height, width = struct.unpack(">HH", frame[1:5])
                return width, height
            f.seek(length - 2, 1)


def probe_image(path: Path) -> tuple[int, int]:
    """Return (width, height) of an image from its header, checking it is complete.

    PNG and JPEG are parsed without decoding (end marker checked for truncation); other formats
    are decoded with OpenCV. Raises ImageProblem with a user-facing reason.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageProblem("image file not found", "missing_image")
    size = path.stat().st_size
    if size == 0:
        raise ImageProblem("image file is empty", "unreadable_image")
    with path.open("rb") as f:
        head = f.read(32)
        f.seek(max(size - 1024, 0))
        tail = f.read()
    if head.startswith(PNG_SIGNATURE):
        width, height = _png_size(head, tail)
    elif head.startswith(b"\xff\xd8"):
        width, height = _jpeg_size(path, tail)
    else:
        image = read_image(path)
        if image is None:
            raise ImageProblem("OpenCV cannot decode the image", "unreadable_image")
        height, width = image.shape[:2]
    if width <= 0 or height <= 0:
        raise ImageProblem(f"image header gives an empty size {width}x{height}", "unreadable_image")
    return int(width), int(height)


def read_image(path: Path) -> np.ndarray | None:
    """Decode an image as BGR uint8 (H, W, 3) in stored pixel layout; None when unreadable.

    Goes through a byte buffer so that non-ASCII paths work on every platform.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0:
        return None
    return cv2.imdecode(data, IMREAD_FLAGS)


def first_readable(paths: Iterable[Path]) -> tuple[np.ndarray, Path] | None:
    """The first of `paths` that decodes as an image, with its path; None when none does."""
    for path in paths:
        img = read_image(path)
        if img is not None:
            return img, Path(path)
    return None


def list_images(folder: Path) -> list[Path]:
    """All image files under `folder` (recursive), sorted for a stable order."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def probe_or_report(path: Path, log) -> tuple[int, int] | None:
    """(width, height) of an image, or None after recording why it is skipped in `log` (a ProblemLog)."""
    try:
        return probe_image(path)
    except ImageProblem as err:
        log.add(path, err.reason, err.kind, "skipped image")
        return None
