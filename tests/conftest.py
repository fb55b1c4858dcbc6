"""Shared pytest setup: the suite runs offline, and the repository root is importable."""

import os
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # must be set before ultralytics is imported (it checks once)

_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)
