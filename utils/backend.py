"""The engine's ``AutoBackend`` for exports in every layout a detector export of ours or of YOLOv5 has.

Exports (``export.py``) write YOLOv5's output ``(batch, anchors, 5 + nc)``: xywh in input pixels, objectness, class
probabilities; their metadata says ``layout: yolov5``. Exports of earlier versions of this project wrote the engine's
``(batch, 4 + nc, anchors)`` (class scores already multiplied by objectness) and have no ``layout`` key. The original
YOLOv5's exports have YOLOv5's layout and only ``stride`` and ``names`` as metadata (its OpenVINO export keeps them in
``<name>.yaml`` beside the ``.xml``).

``DetectorBackend`` is the one place where outputs in YOLOv5's layout become what the engine's NMS, validator and
predictor consume: ``(batch, 4 + nc, anchors)``, boxes xywh and scores objectness x class probability. ``.pt`` models
and classifiers pass through unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from ultralytics.nn.autobackend import AutoBackend

LAYOUT_KEY = "layout"  # export metadata key; its value for YOLOv5's layout:
YOLOV5 = "yolov5"
ENGINE = "engine"  # (batch, 4 + nc, anchors): exports of this project before the layout key existed
AUTHOR = "yolov5-attention"  # the metadata 'author' of this project's exports


def declared_layout(metadata: dict) -> str | None:
    """The layout an export's metadata names: ``yolov5`` (``layout: yolov5``), ``engine`` (an older export of ours:
    our metadata without the key), or None when the metadata is not ours (the original YOLOv5's, or none)."""
    layout = metadata.get(LAYOUT_KEY)
    if layout is not None:
        return str(layout).strip().lower()
    return ENGINE if metadata.get("author") == AUTHOR else None


def layout_of(y: torch.Tensor, nc: int | None, declared: str | None = None) -> str | None:
    """``yolov5``, ``engine`` or None (not a detector's 3-D output): the metadata's word first, then the shape
    (5 + nc on the last axis is YOLOv5's, 4 + nc on axis 1 the engine's; without nc, the shorter of the two axes
    holds the values)."""
    if not isinstance(y, torch.Tensor) or y.ndim != 3:
        return None
    if declared in (YOLOV5, ENGINE):
        return declared
    n1, n2 = y.shape[1], y.shape[2]
    if nc:
        if n2 == 5 + nc and n1 != 4 + nc:
            return YOLOV5
        if n1 == 4 + nc:
            return ENGINE
    return YOLOV5 if 5 < n2 < n1 else ENGINE


def yolov5_to_engine(y: torch.Tensor) -> torch.Tensor:
    """YOLOv5's ``(b, n, 5 + nc)`` (xywh, objectness, class probabilities) -> the engine's ``(b, 4 + nc, n)`` (xywh,
    objectness x class probability)."""
    return torch.cat((y[..., :4], y[..., 5:] * y[..., 4:5]), -1).transpose(1, 2)


def _yolov5_openvino_metadata(folder: Path) -> dict:
    """``stride`` and ``names`` of an original YOLOv5 OpenVINO export (its ``<name>.yaml`` beside the ``.xml``)."""
    import yaml

    xml = next(iter(sorted(folder.glob("*.xml"))), None)
    f = xml.with_suffix(".yaml") if xml is not None else None
    if f is None or not f.is_file():
        return {}
    try:
        meta = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


class DetectorBackend(AutoBackend):
    """``AutoBackend`` whose detector exports give ``(batch, 4 + nc, anchors)`` whatever layout they were written in.

    ``raw=True`` returns the export's own output (what deployment code sees); ``layout`` is the layout found in the
    metadata (``yolov5``, ``engine``, or None: decided from the output's shape on each call).
    """

    def __init__(self, *args: Any, raw: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.raw = raw
        if self.format == "openvino" and not self.backend.metadata:
            self._apply_yolov5_sidecar(args[0] if args else kwargs.get("model"))
        self.layout = declared_layout(self.backend.metadata) if self.format != "pt" else None

    def _apply_yolov5_sidecar(self, weights: Any) -> None:
        from ultralytics.nn.autobackend import check_class_names

        p = Path(str(weights))
        meta = _yolov5_openvino_metadata(p if p.is_dir() else p.parent)
        if "stride" in meta:
            self.backend.stride = int(meta["stride"])
        if meta.get("names"):
            self.backend.names = check_class_names(meta["names"])

    def forward(self, im: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        y = super().forward(im, *args, **kwargs)
        if self.raw or self.format == "pt" or self.backend.metadata.get("task") == "classify":
            return y
        first = y[0] if isinstance(y, (list, tuple)) else y
        nc = len(self.names) if self.names and len(self.names) != 999 else None  # 999: the engine's "no names"
        if layout_of(first, nc, self.layout) != YOLOV5:
            return y
        if nc is None:  # an export without class names: name its classes by number, as the engine does
            self.backend.names = {i: f"class{i}" for i in range(first.shape[2] - 5)}
        out = yolov5_to_engine(first)
        return [out, *y[1:]] if isinstance(y, (list, tuple)) else out
