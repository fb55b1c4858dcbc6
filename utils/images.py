"""Images: which files are images, and how an image becomes the network's input (letterboxing, as inference does)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

# The formats the engine's loaders read (ultralytics.data.utils.IMG_FORMATS), the common ones first.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".dng", ".mpo", ".pfm", ".heic")


def letterbox(images: Sequence[np.ndarray], imgsz: Sequence[int], stride: int = 32, auto: bool = False) -> np.ndarray:
    """BGR HWC uint8 images resized and padded (grey) to ``imgsz`` as one RGB ``(n, 3, h, w)`` uint8 batch; with
    ``auto``, images of one shape are padded only to the smallest stride-multiple rectangle instead."""
    from ultralytics.data.augment import LetterBox

    same = len({im.shape for im in images}) == 1
    lb = LetterBox(tuple(imgsz), auto=auto and same, stride=stride)
    x = np.stack([lb(image=im) for im in images])
    return np.ascontiguousarray(x[..., ::-1].transpose(0, 3, 1, 2))  # BGR to RGB, BHWC to BCHW
