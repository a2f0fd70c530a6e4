"""Inputs for inference: an image, a folder, a glob or a video file, read as RGB frames with an id and a name.

Images are numbered by the digits of their file name when it is all digits (COCO's ``000000000785.jpg`` is
image 785, so a COCO detection file for those images applies as it is), else by their position (1, 2, ...).
Video frames are numbered 0, 1, ... An image that cannot be read is reported as a ``Frame`` without pixels.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from data.errors import DataError

# FFmpeg's own log lines ("moov atom not found") would precede the one-line error on an undecodable video; it
# reads this once, on the first capture, so it is set at import (export OPENCV_FFMPEG_LOGLEVEL to see them).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class Frame:
    """One image or video frame: ``image`` RGB uint8 ``(H, W, 3)``, or None with ``error`` when unreadable."""

    image_id: int
    name: str
    image: np.ndarray | None
    error: str | None = None


def image_id_for(path: Path, position: int) -> int:
    """COCO-style id from an all-digit file stem (``000000000785.jpg`` → 785), else ``position``."""
    return int(path.stem) if path.stem.isdigit() else position


def list_images(source: str | Path) -> list[Path]:
    """The image files of an image path, a folder (sorted, not recursive) or a glob pattern."""
    text = str(source)
    path = Path(text)
    if any(c in text for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise DataError(f"{text!r}: the pattern matches no files; check the pattern")
        return files
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{text!r}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return files
    if path.is_file():
        return [path]
    raise DataError(f"{text!r} does not exist; pass an image, a folder, a glob pattern or a video file")


def is_video(source: str | Path) -> bool:
    """Whether ``source`` is a video file (by suffix)."""
    return Path(source).is_file() and Path(source).suffix.lower() in VIDEO_SUFFIXES


def read_frame(path: Path, image_id: int) -> Frame:
    """One image file as a ``Frame``; an undecodable or unreadable file gives a Frame with ``error`` set."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        return Frame(image_id, path.name, None, f"{path}: cannot be decoded as an image; skipped")
    return Frame(image_id, path.name, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def iter_images(files: list[Path]) -> Iterator[Frame]:
    """Frames of image files, in order, ids from ``image_id_for``."""
    for position, path in enumerate(files, start=1):
        yield read_frame(path, image_id_for(path, position))


class VideoReader:
    """Frames of a video file (RGB), with its frame rate, size and frame count; DataError if it cannot be decoded."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.capture = cv2.VideoCapture(str(self.path))
        ok, first = self.capture.read() if self.capture.isOpened() else (False, None)
        if not ok:
            self.capture.release()
            raise DataError(f"video {str(self.path)!r} cannot be decoded (no frame read); check the file and codec")
        self._first: np.ndarray | None = first
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 25.0
        self.size = (first.shape[1], first.shape[0])  # (W, H)
        self.frame_count = max(int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)), 1)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        try:
            while True:
                if self._first is not None:
                    bgr, self._first = self._first, None
                else:
                    ok, bgr = self.capture.read()
                    if not ok:
                        return
                yield Frame(index, f"{self.path.stem}_{index:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                index += 1
        finally:
            self.capture.release()


class VideoWriter:
    """Writes RGB frames ``(H, W, 3)`` to an ``.mp4`` (``mp4v``) file at ``fps``."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self.writer.isOpened():
            raise DataError(f"cannot write video {str(self.path)!r} (OpenCV has no mp4v encoder); write images instead")

    def write(self, image: np.ndarray) -> None:
        self.writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self.writer.release()
