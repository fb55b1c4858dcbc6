"""YOLOv5 blocks and attention modules (``common``) and the detection model built from a YAML (``yolo``).

``utils`` is imported first: its ``__init__`` keeps the Ultralytics engine offline, and ``yolo`` imports the engine.
"""

import utils  # noqa: F401
