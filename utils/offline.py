"""Keep the Ultralytics engine offline: no telemetry, no hub look-ups, no font downloads.

Importing this module (before ``ultralytics``) sets ``YOLO_OFFLINE=1`` unless the user set it already;
``configure()`` then turns settings sync off for this process and makes plot fonts come from the
fonts matplotlib installs, so a machine without internet never stalls or dies on a download.
Set ``YOLO_OFFLINE=0`` to let the engine go online.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")
OFFLINE = os.environ["YOLO_OFFLINE"].lower() not in {"0", "false", "no"}


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
    """Apply the offline settings to the imported engine (idempotent)."""
    global _configured
    if _configured or not OFFLINE:
        return
    _configured = True
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
