"""Keep the Ultralytics engine offline: no telemetry, no hub look-ups, no font downloads, no package installs.

Importing this module (before ``ultralytics``) sets ``YOLO_OFFLINE=1`` and ``YOLO_AUTOINSTALL=0`` unless the user set
them already; ``configure()`` then turns settings sync off for this process, makes plot fonts come from the
fonts matplotlib installs, so a machine without internet never stalls or dies on a download, and keeps the engine
from pip-installing optional packages (it reports them missing instead).
Set ``YOLO_OFFLINE=0`` to let the engine go online, ``YOLO_AUTOINSTALL=1`` to let it install packages.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")  # the engine never pip-installs a package it misses
OFFLINE = os.environ["YOLO_OFFLINE"].lower() not in {"0", "false", "no"}
AUTOINSTALL = os.environ["YOLO_AUTOINSTALL"].strip().lower() in {"1", "true", "yes", "on", "y", "t"}


@lru_cache(maxsize=None)
def local_font(name: str = "Arial.ttf") -> str | None:
    """Path of an installed font for plots: the requested file if the system has it, else matplotlib's DejaVu Sans."""
    from matplotlib import font_manager

    stem = Path(name).stem.lower()
    for f in font_manager.fontManager.ttflist:
        if Path(f.fname).stem.lower() == stem and os.path.exists(f.fname):
            return f.fname
    if "unicode" in stem:  # non-ASCII class names: prefer a CJK-capable font when one is installed
        for f in font_manager.fontManager.ttflist:
            if any(k in f.name for k in ("Noto Sans CJK", "WenQuanYi", "Droid Sans Fallback")):
                return f.fname
    return font_manager.findfont("DejaVu Sans", fallback_to_default=True)


_configured = False


def configure() -> None:
    """Apply the offline and no-install settings to the imported engine (idempotent)."""
    global _configured
    if _configured:
        return
    _configured = True
    if not AUTOINSTALL:
        _never_install()
    if OFFLINE:
        _stay_offline()


def _never_install() -> None:
    """The engine's ``check_requirements`` only reports a missing package (as with ``YOLO_AUTOINSTALL=0``), even if
    the engine was imported before this module; and Pillow's ``open`` stays Pillow's unless the HEIF plugin is
    installed (the engine's wrapper tries to pip-install it for any file Pillow cannot identify)."""
    import importlib.util

    import ultralytics.utils.checks as checks
    import ultralytics.utils.patches as patches
    from PIL import Image

    checks.AUTOINSTALL = False
    if importlib.util.find_spec("pi_heif") is None:
        Image.open = patches._image_open


def _stay_offline() -> None:
    import ultralytics.data.utils as data_utils
    import ultralytics.utils.checks as checks
    import ultralytics.utils.plotting as plotting
    from ultralytics.utils import SETTINGS

    dict.__setitem__(SETTINGS, "sync", False)  # in memory only (not persisted): no event or crash reports
    original = checks.check_font

    def check_font(font: str = "Arial.ttf"):
        path = Path(font)
        if path.exists():
            return path
        return local_font(path.name) or original(font)

    for module in (checks, plotting, data_utils):
        module.check_font = check_font
