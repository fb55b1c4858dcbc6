"""Weights by name or URL: ``--weights yolov5s.pt`` and ``--weights https://host/best.pt`` as in YOLOv5.

``resolve_weights`` is the one place every entry point (train.py, val.py, detect.py, export.py, classify/*.py and the
hub) turns its ``--weights`` into a local file before anything is loaded:

* a path that exists is returned as given;
* an http(s) URL is downloaded into the current folder under its file name (once: a file of that name already there
  is used as is);
* an official YOLOv5 release name (``OFFICIAL_WEIGHTS``: ``yolov5n.pt`` ... ``yolov5x6.pt``, ``yolov5s-cls.pt``...)
  that is not on disk is downloaded from ``RELEASE_URL`` to the path given (``yolov5s.pt``: the current folder);
* anything else is returned unchanged, for the loader to report as missing.

Naming a URL or an official file counts as asking for the download, so it happens even with ``YOLO_OFFLINE=1`` (which
keeps the engine's own telemetry and hub look-ups off). Downloads go through ``utils.dataprep.download`` (a ``.part``
file renamed when complete, retries); the file is then opened by the restricted loader like any checkpoint. A failed
download is one ``WeightsDownloadError`` naming the URL and where to put the file by hand.
``YOLOV5A_WEIGHTS_URL`` replaces ``RELEASE_URL`` (a mirror, or a local server in the tests).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

RELEASE_TAG = "v7.0"  # holds every file of OFFICIAL_WEIGHTS (YOLOv5 asks GitHub for the latest tag; we do not)
RELEASE_URL = f"https://github.com/ultralytics/yolov5/releases/download/{RELEASE_TAG}"
URL_ENV = "YOLOV5A_WEIGHTS_URL"
RETRIES = 3  # attempts per download (a client error such as 404 is not retried)
OFFICIAL_WEIGHTS = frozenset(f"yolov5{size}{kind}.pt" for size in "nsmlx" for kind in ("", "6", "-cls"))
_URL = re.compile(r"^(https?):/+(?=[^/])", re.IGNORECASE)  # also "https:/host/..." (what Path() makes of a URL)


class WeightsDownloadError(FileNotFoundError):
    """Weights named by URL or official name could not be downloaded; the message names the URL and the file."""


def release_url() -> str:
    """Where the official weights are fetched from: ``$YOLOV5A_WEIGHTS_URL`` if set, else ``RELEASE_URL``."""
    return (os.environ.get(URL_ENV) or RELEASE_URL).rstrip("/")


def as_url(weights: str | Path) -> str | None:
    """``weights`` as an http(s) URL (with ``//`` restored after the scheme), or None if it is not one."""
    text = str(weights).strip()
    m = _URL.match(text)
    return f"{m.group(1).lower()}://{text[m.end():]}" if m else None


def is_official(weights: str | Path) -> bool:
    """Whether the file name of ``weights`` is one of YOLOv5's release assets (``yolov5s.pt``...)."""
    return Path(str(weights)).name in OFFICIAL_WEIGHTS


def resolve_weights(weights: str | Path) -> str | Path:
    """A local file for ``weights``, downloading a URL or a missing official file first (see the module docstring).

    Returns ``weights`` itself when nothing was to be fetched, else the local path (a ``str``)."""
    if not str(weights).strip():
        return weights
    if url := as_url(weights):
        from utils.dataprep import _url_filename

        return str(_fetch(url, Path.cwd() / _url_filename(url)))
    path = Path(str(weights))
    if path.exists() or not is_official(path):
        return weights
    return str(_fetch(f"{release_url()}/{path.name}", path))


def _fetch(url: str, dest: Path) -> Path:
    """``url`` saved as ``dest`` (skipped if ``dest`` is a file already); one ``WeightsDownloadError`` on failure."""
    from utils.dataprep import DownloadError, download

    if dest.is_file():
        from ultralytics.utils import LOGGER

        LOGGER.info(f"Found {dest}, not downloading {url} again")
        return dest
    try:
        download(url, dir=dest.parent, unzip=False, retries=RETRIES)
    except DownloadError as e:
        reason = str(e).split("): ", 1)[-1] if "): " in str(e) else str(e)
        reason = re.sub(r"^<urlopen error (.*)>$", r"\1", reason)  # "[Errno 111] Connection refused"
        raise WeightsDownloadError(f"could not download {url} ({reason}); download it by hand and save it as "
                                   f"{dest.resolve()}, or pass the path of a local file as --weights") from None
    return dest
