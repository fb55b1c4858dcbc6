"""File names that every writer can take, whatever the user's files are called.

A file name that is not valid UTF-8 (on Linux, bytes such as ``b'bad\\xff.jpg'``; Python holds them as lone
surrogates, ``'bad\\udcff.jpg'``) opens fine from Python, but OpenCV's ``imread``, ``imwrite``, ``VideoCapture`` and
``VideoWriter`` crash the whole process on it (a segmentation fault). So:

* ``safe_name`` gives outputs named after such a file a name that any tool can take: the characters that cannot be
  encoded become ``_`` and a short hash of the original name keeps it unique (``bad_-3f1c9a2e.jpg``);
  ``OutputNames`` does that per source and logs the original once;
* ``write_image`` encodes in memory and writes the bytes from Python, so any folder works;
* ``cv2_readable`` / ``cv2_writable`` hand OpenCV's video classes a path they can take (a symbolic link with a safe
  name in a temporary folder) when the real one has no such name;
* ``shown`` is the text for a log line or window title, undecodable bytes written as ``\\xff``.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np


def _encodable(c: str) -> bool:
    try:
        c.encode("utf-8")
        c.encode(sys.getfilesystemencoding())
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def is_encodable(text: str | os.PathLike) -> bool:
    """Whether ``text`` encodes strictly to UTF-8 and to the file-system encoding (what OpenCV's C++ side needs)."""
    return _encodable(str(text))


def shown(text: str) -> str:
    """``text`` for a log line: bytes that were not UTF-8 as ``\\xff``, other unencodable characters as ``\\uXXXX``."""
    text = str(text)
    if _encodable(text):
        return text
    out = []
    for c in text:
        if _encodable(c):
            out.append(c)
        elif "\udc80" <= c <= "\udcff":  # a byte Python could not decode (surrogateescape)
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        else:
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
    return "".join(out)


def safe_name(name: str) -> str:
    """``name`` itself when every tool can take it, else its stem with ``_`` for what cannot be encoded, ``-`` and 8
    hex digits of a hash of the original, then its suffix (made safe the same way)."""
    if _encodable(name):
        return name
    stem, dot, suffix = name.rpartition(".") if "." in name.lstrip(".") else (name, "", "")
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    clean = ["".join(c if _encodable(c) else "_" for c in part) for part in (stem, suffix)]
    return f"{clean[0]}-{digest}{dot}{clean[1]}"


class OutputNames:
    """The stem that the outputs of each source file get: its own, or ``safe_name``'s for a name that is not valid
    UTF-8, which is logged once per file with the original name (``log`` is called with the message)."""

    def __init__(self, log):
        self.log, self.seen = log, set()

    def stem(self, path: str | Path) -> str:
        path = Path(path)
        if _encodable(path.name):
            return path.stem
        stem = Path(safe_name(path.name)).stem
        if str(path) not in self.seen:
            self.seen.add(str(path))
            self.log(f"WARNING ⚠️ {shown(path)}: the file name is not valid UTF-8; its results are named {stem}")
        return stem


def write_image(path: str | Path, im: np.ndarray) -> Path:
    """Write ``im`` (BGR) to ``path`` in the format its suffix names, from Python (so any folder name works); an
    unencodable file name is made safe with ``safe_name``. Returns the path written; OSError if it cannot be."""
    import cv2

    path = Path(path)
    path = path.with_name(safe_name(path.name))
    ok, buf = cv2.imencode(path.suffix or ".jpg", im)
    if not ok:
        raise OSError(f"{shown(path)}: OpenCV could not encode the image as {path.suffix or '.jpg'}")
    with open(path, "wb") as f:
        f.write(buf.tobytes())
    return path


_ALIAS_DIR: list[str] = []


def _alias(target: Path, name: str) -> str:
    """A symbolic link to ``target`` in this process's temporary folder, named ``name`` after a hash of ``target``
    (so different targets get different links); the folder is removed at exit."""
    if not _ALIAS_DIR:
        _ALIAS_DIR.append(tempfile.mkdtemp(prefix="yolov5a-names-"))
        atexit.register(shutil.rmtree, _ALIAS_DIR[0], True)
    digest = hashlib.sha1(str(target).encode("utf-8", "surrogatepass"))
    link = Path(_ALIAS_DIR[0]) / f"{digest.hexdigest()[:8]}-{name}"
    if not link.is_symlink():
        try:
            os.symlink(target, link, target_is_directory=target.is_dir())
        except OSError as e:
            raise OSError(f"{shown(target)}: OpenCV cannot open a path that is not valid UTF-8 and no link with a safe "
                          f"name could be made ({e}); rename it") from None
    return str(link)


def cv2_readable(path: str | Path) -> str:
    """A path OpenCV's ``VideoCapture`` can open for the existing file ``path``: itself, or a link with a safe name."""
    path = Path(path)
    return str(path) if _encodable(str(path)) else _alias(path.absolute(), safe_name(path.name))


def cv2_writable(path: str | Path) -> str:
    """A path OpenCV's ``VideoWriter`` can write ``path`` through (made safe with ``safe_name``): itself, or the
    file's name inside a link with a safe name to its folder."""
    path = Path(path)
    path = path.with_name(safe_name(path.name))
    if _encodable(str(path)):
        return str(path)
    folder = path.parent.absolute()
    return str(Path(_alias(folder, safe_name(folder.name))) / path.name)


def video_safe(loader_class: type) -> type:
    """The engine's loader of image and video files (``LoadImagesAndVideos``), opening videos whose names OpenCV
    cannot take through ``cv2_readable``'s link."""

    class Loader(loader_class):
        def _new_video(self, path: str) -> None:
            super()._new_video(cv2_readable(path))

    return Loader
