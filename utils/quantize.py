"""Post-training INT8 quantization for ``export.py --int8``.

* ``calibration_images`` draws images from a data YAML's train (or val) split and letterboxes them exactly as
  inference does for a fixed-size export (Ultralytics' ``LetterBox``, RGB, CHW, 0-1 floats).
* ``quantize_openvino`` quantizes an OpenVINO model with NNCF; ``quantize_onnx`` writes an ONNX Runtime static
  (QDQ) quantized copy of an ONNX file.
* By default neither quantizes the detection head's decode tail (sigmoid, grid/anchor arithmetic, the final concat):
  its outputs are pixel coordinates up to the image size, which 8 bits would round to several pixels. The tail is found
  from the graph itself: every node downstream of the last convolutions (the head's 1x1 convs, which stay INT8).
* ``agreement`` compares an INT8 model's output with the float model's in terms that matter for detection.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from utils.images import IMAGE_SUFFIXES, letterbox

PRESETS = ("mixed", "performance")


class CalibrationError(ValueError):
    """No usable calibration images (missing split, empty folder): the message names the data YAML and the fix."""


# ----------------------------------------------------------------------------------------------------
# Calibration data
# ----------------------------------------------------------------------------------------------------


def _image_files(source: str | Path | Sequence) -> list[Path]:
    """Image files of a split as a data YAML gives it: a folder, a ``.txt`` list of paths, or a list of either."""
    if isinstance(source, (list, tuple)):
        return [f for s in source for f in _image_files(s)]
    p = Path(source)
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
    if p.suffix == ".txt" and p.is_file():
        lines = [x.strip() for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
        files = [q if q.is_absolute() else (p.parent / q) for q in map(Path, lines)]
        return [q for q in files if q.suffix.lower() in IMAGE_SUFFIXES]
    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
        return [p]
    return []


def calibration_images(data: str | Path, imgsz: Sequence[int], n: int = 300, stride: int = 32, batch_size: int = 1,
                       split: str = "train") -> list[np.ndarray]:
    """``n`` images of ``data``'s ``split`` (falling back to ``val``), evenly spaced over the sorted file list, as
    ``(batch_size, 3, h, w)`` float32 arrays (images grouped into batches; a last incomplete batch is dropped)."""
    import cv2

    from utils.datayaml import prepare_data
    from utils.engine import resolve_data  # (importing it puts our check in front of the engine's check_det_dataset)

    yaml_path = prepare_data(resolve_data(data))  # fetched/generated if the YAML says how; a script only if allowed
    import ultralytics.data.utils as data_utils

    info = data_utils.check_det_dataset(yaml_path)  # resolves the paths; never runs the YAML's download
    files: list[Path] = []
    for s in dict.fromkeys((split, "train", "val")):
        if info.get(s):
            files = _image_files(info[s])
            if files:
                break
    if not files:
        raise CalibrationError(f"--data {data}: no images found in its train or val split for INT8 calibration; "
                               f"check the paths in {yaml_path}")
    n = max(batch_size, min(n, len(files)))
    picks = [files[int(i)] for i in np.linspace(0, len(files) - 1, n).round()]
    images = []
    for f in picks:
        im = cv2.imread(str(f))
        if im is None:
            raise CalibrationError(f"{f}: cannot be read as an image (INT8 calibration, --data {data})")
        images.append(letterbox([im], imgsz, stride)[0].astype(np.float32) / 255.0)  # as a fixed-size export sees it
    return [np.stack(images[i:i + batch_size]) for i in range(0, len(images) - batch_size + 1, batch_size)]


# ----------------------------------------------------------------------------------------------------
# The decode tail: nodes downstream of the last convolutions
# ----------------------------------------------------------------------------------------------------


def _downstream_of_last_convs(nodes: list, kind: Callable, children: Callable, name: Callable) -> list[str]:
    """Names of the nodes reachable from the convolutions that have no convolution after them (excluding those)."""
    below: dict[int, set[int]] = {}  # node id -> ids of all descendants (memoised DFS, graph is a DAG)
    by_id = {id(n): n for n in nodes}

    def descendants(n) -> set[int]:
        stack, seen = [n], set()
        while stack:
            for c in children(stack.pop()):
                if id(c) not in seen:
                    seen.add(id(c))
                    stack.append(c)
        return seen

    convs = [n for n in nodes if kind(n)]
    for c in convs:
        below[id(c)] = descendants(c)
    last = [c for c in convs if not any(kind(by_id[d]) for d in below[id(c)] if d in by_id)]
    tail = set().union(*(below[id(c)] for c in last)) if last else set()
    return sorted(name(by_id[i]) for i in tail if i in by_id)


def openvino_tail(ov_model) -> list[str]:
    """Friendly names of the OpenVINO ops after the head's convolutions (the decode tail)."""
    ops = list(ov_model.get_ordered_ops())

    def children(op):
        return [t.get_node() for out in op.outputs() for t in out.get_target_inputs()]

    keep = {"Constant", "Result", "Parameter"}
    names = _downstream_of_last_convs(ops, lambda op: op.get_type_name() == "Convolution", children,
                                      lambda op: op.get_friendly_name())
    types = {op.get_friendly_name(): op.get_type_name() for op in ops}
    return [n for n in names if types[n] not in keep]


def onnx_tail(model) -> list[str]:
    """Names of the ONNX nodes after the head's ``Conv`` nodes (the decode tail)."""
    nodes = list(model.graph.node)
    consumers: dict[str, list] = {}
    for nd in nodes:
        for t in nd.input:
            consumers.setdefault(t, []).append(nd)
    return _downstream_of_last_convs(nodes, lambda nd: nd.op_type == "Conv",
                                     lambda nd: [c for t in nd.output for c in consumers.get(t, [])],
                                     lambda nd: nd.name)


# ----------------------------------------------------------------------------------------------------
# Quantizers
# ----------------------------------------------------------------------------------------------------


def quantize_openvino(ov_model, images: Iterable[np.ndarray], preset: str = "mixed", quantize_tail: bool = False):
    """NNCF post-training quantization of an OpenVINO model (``preset``: ``mixed``, asymmetric activations, or
    ``performance``, symmetric); returns the quantized ``ov.Model``."""
    import nncf

    if preset not in PRESETS:
        raise ValueError(f"INT8 preset '{preset}': choose from {', '.join(PRESETS)}")
    images = list(images)
    tail = [] if quantize_tail else openvino_tail(ov_model)
    scope = nncf.IgnoredScope(names=tail, validate=False) if tail else None
    logger, level = logging.getLogger("nncf"), logging.getLogger("nncf").level
    logger.setLevel(logging.WARNING)  # NNCF logs every node it skips at INFO
    try:
        return nncf.quantize(ov_model, nncf.Dataset(images), subset_size=len(images), ignored_scope=scope,
                             preset=getattr(nncf.QuantizationPreset, preset.upper()))
    finally:
        logger.setLevel(level)


def quantize_onnx(src: str | Path, dst: str | Path, images: Iterable[np.ndarray], quantize_tail: bool = False,
                  per_channel: bool = True) -> Path:
    """ONNX Runtime static quantization (QDQ format, uint8 activations, int8 per-channel weights, min-max
    calibration) of ``src`` into ``dst``; keeps ``src``'s metadata."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, name: str, batches: list[np.ndarray]):
            self.name, self.it = name, iter(batches)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {self.name: x}

    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    exclude = [] if quantize_tail else onnx_tail(model)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(model.graph.input[0].name, list(images)),
                        quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                        calibrate_method=CalibrationMethod.MinMax)  # min/max are reduced in-graph: small memory
    q = onnx.load(str(dst))
    if not quantize_tail:
        strip_qdq(q, set(onnx_tail(q)))
    del q.metadata_props[:]
    for p in model.metadata_props:
        q.metadata_props.add().CopyFrom(p)
    onnx.save(q, str(dst))
    return dst


def strip_qdq(model, names: set[str]) -> int:
    """Remove ``QuantizeLinear`` nodes among ``names`` with their ``DequantizeLinear`` consumers (rewiring those
    consumers' users to the float tensor), in place; returns the number of pairs removed.

    ONNX Runtime's quantizer also quantizes a Conv's output when the Conv is quantized, even if every consumer is
    excluded: for the head's convs that would round the raw logits the decode turns into pixel boxes."""
    nodes = list(model.graph.node)
    quant = {nd.output[0]: nd for nd in nodes if nd.op_type == "QuantizeLinear" and nd.name in names}
    dequant = [nd for nd in nodes if nd.op_type == "DequantizeLinear" and nd.input[0] in quant]
    if any(nd.input[0] == out for nd in nodes if nd.op_type != "DequantizeLinear" for out in quant):
        return 0  # a quantized tensor used directly (not through a DequantizeLinear): leave the graph alone
    rename = {dq.output[0]: quant[dq.input[0]].input[0] for dq in dequant}
    graph_outputs = {o.name for o in model.graph.output}
    if graph_outputs & set(rename):
        return 0
    drop = {id(nd) for nd in dequant} | {id(nd) for nd in quant.values()}
    keep = [nd for nd in nodes if id(nd) not in drop]
    for nd in keep:
        for i, t in enumerate(nd.input):
            if t in rename:
                nd.input[i] = rename[t]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    return len(dequant)


# ----------------------------------------------------------------------------------------------------
# How close an INT8 model stays to the float one
# ----------------------------------------------------------------------------------------------------


def agreement(y: np.ndarray, ref: np.ndarray, conf: float = 0.25) -> dict[str, float]:
    """Compare two ``(bs, 4 + nc, N)`` outputs: correlation and max abs difference of the class scores, and the max
    box difference (px, xywh) over anchors whose reference score exceeds ``conf`` (0 when there are none)."""
    y, ref = np.asarray(y, np.float64), np.asarray(ref, np.float64)
    s, s_ref = y[:, 4:].ravel(), ref[:, 4:].ravel()
    corr = float(np.corrcoef(s, s_ref)[0, 1]) if s.std() > 0 and s_ref.std() > 0 else float(np.allclose(s, s_ref))
    mask = ref[:, 4:].max(1) > conf  # (bs, N)
    box = float(np.abs(y[:, :4] - ref[:, :4]).transpose(0, 2, 1)[mask].max()) if mask.any() else 0.0
    return {"score_corr": corr, "score_max_diff": float(np.abs(s - s_ref).max()), "box_max_diff": box,
            "n_confident": int(mask.sum())}
