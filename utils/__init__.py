"""Utilities: loss, anchors, engine glue, data preparation, checkpoints.

Importing any of them first keeps the Ultralytics engine offline (see ``utils/offline.py``).
"""

from utils import offline  # noqa: F401  (sets YOLO_OFFLINE before the engine is imported)
