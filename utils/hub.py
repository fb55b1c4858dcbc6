"""PyTorch Hub API (``hubconf.py``): models by YAML name or from a file, ``AutoShape`` and ``Detections``.

YOLOv5's hub behaviour, written for this repository::

    model = torch.hub.load("path/to/repo", "custom", path="best.pt", source="local")   # or 'yolov5s_ema', ...
    results = model(["a.jpg", rgb_array, pil_image, "https://host/b.jpg"], size=640)  # -> Detections
    results.print(); results.save(); results.pandas().xyxy[0]; crops = results.crop(save=False)

Inputs to ``AutoShape``: file paths, http(s) URLs (fetched with ``urllib``), PIL images, numpy HWC arrays in RGB
order (OpenCV images as ``cv2.imread(f)[..., ::-1]``, as in YOLOv5), lists of these, or a BCHW tensor (given to the
model unchanged, returning its raw output).

Public API:
    hub_configs() -> {entry name: model YAML}     # yolov5s, yolov5s_ema, yolov5x_p2_ema, yolov5s6, ...
    find_weights(name) -> Path                    # the local <name>.pt for pretrained=True (one clear error if absent)
    create(name, pretrained, channels, classes, autoshape, verbose, device)
    load_custom(path, autoshape, verbose, device)
    AutoShape(model), Detections
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import urllib.parse
import urllib.request
from copy import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from ultralytics.utils import LOGGER

from models.classify import ClassificationModel
from models.yolo import Model
from utils.checkpoint import checkpoint_model, load_backend, load_checkpoint, load_model, transfer_weights
from utils.weights import is_official, resolve_weights

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIRS = (ROOT / "models", ROOT / "models" / "hub")  # entries come from the YAMLs directly in these folders


# ----------------------------------------------------------------------------------------------------
# Models by name, or from a file
# ----------------------------------------------------------------------------------------------------


def entry_name(stem: str) -> str:
    """The hub entry of a YAML file name: ``yolov5x-p2-ema`` -> ``yolov5x_p2_ema`` (a Python identifier)."""
    return re.sub(r"\W", "_", stem)


def hub_configs() -> dict[str, Path]:
    """``{entry name: YAML path}`` for every model YAML in ``models/`` and ``models/hub/`` (``models/`` wins a tie)."""
    out: dict[str, Path] = {}
    for d in CONFIG_DIRS:
        for f in sorted(d.glob("*.yaml")):
            out.setdefault(entry_name(f.stem), f)
    return out


def find_weights(name: str) -> Path:
    """The local weights file for ``pretrained=True``: ``<name>.pt`` in the current folder or the repository root;
    an official YOLOv5 release (``yolov5s.pt``...) found in neither is downloaded into the current folder, as in YOLOv5
    (``utils.weights.resolve_weights``).

    ``name`` is a hub entry (``yolov5s_ema``) or a YAML stem (``yolov5s-ema``); both file names are looked for.
    This is the one place that turns a name into weights.
    """
    cfg = hub_configs().get(entry_name(name))
    stems = list(dict.fromkeys([cfg.stem if cfg else name, name, entry_name(name)]))
    for d in (Path.cwd(), ROOT):
        for stem in stems:
            if (d / f"{stem}.pt").is_file():
                return d / f"{stem}.pt"
    file = f"{stems[0]}.pt"
    if is_official(file):  # a download failure is one error naming the URL and where to save the file
        return Path.cwd() / resolve_weights(file)
    how = f"train it with python train.py --cfg {cfg.relative_to(ROOT).as_posix() if cfg else stems[0] + '.yaml'}"
    raise FileNotFoundError(
        f"pretrained=True needs the weights file {file} in the current folder ({Path.cwd()}) or the repository root "
        f"({ROOT}); it is not downloaded (only official YOLOv5 weights are; {how} and copy its weights/best.pt). Or "
        f"pass pretrained=False for random weights, or load a checkpoint by path with torch.hub.load(..., 'custom', "
        f"path='path/to/{file}')")


@contextlib.contextmanager
def _log_level(verbose: bool):
    """Only warnings and errors from the engine's logger while ``verbose`` is False (YOLOv5's ``_verbose``)."""
    level = LOGGER.level
    if not verbose:
        LOGGER.setLevel(logging.WARNING)
    try:
        yield
    finally:
        LOGGER.setLevel(level)


def select_device(device: str | int | torch.device | None) -> torch.device:
    """``None``: the first GPU if there is one, else the CPU (YOLOv5's hub default); else the device named."""
    if device is None:
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.device):
        return device
    from ultralytics.utils.torch_utils import select_device as engine_select

    return engine_select(str(device), verbose=False)


def create(name: str, pretrained: bool = True, channels: int = 3, classes: int = 80, autoshape: bool = True,
           verbose: bool = True, device: str | torch.device | None = None) -> nn.Module:
    """The model of hub entry ``name`` (YOLOv5's ``_create``).

    ``pretrained`` with 3 channels and 80 classes loads the whole local ``<name>.pt``; with other channels or classes
    a model is built from the YAML and takes every tensor of ``<name>.pt`` whose shape fits (anchors excepted).
    ``autoshape`` wraps a detector in ``AutoShape``; without it the bare ``Model`` is returned.
    """
    configs = hub_configs()
    cfg = configs.get(entry_name(str(name)))
    if cfg is None:
        raise ValueError(f"no hub model '{name}'; available: {', '.join(configs)} (or 'custom' with path=...)")
    with _log_level(verbose):
        dev = select_device(device)
        if pretrained and channels == 3 and classes == 80:
            return load_custom(find_weights(str(name)), autoshape=autoshape, verbose=verbose, device=dev)
        model = Model(cfg, ch=channels, nc=classes, verbose=verbose)
        if pretrained:
            src = checkpoint_model(load_checkpoint(find_weights(str(name))))
            transfer_weights(model, src, exclude=("anchors",), verbose=verbose)
            if len(src.names) == classes:
                model.names = dict(src.names)
        model = model.to(dev)
        return AutoShape(model, verbose=verbose) if autoshape else model


def load_custom(path: str | Path | nn.Module = "path/to/model.pt", autoshape: bool = True, verbose: bool = True,
                device: str | torch.device | None = None) -> nn.Module:
    """A model from a file (YOLOv5's ``custom``): a ``.pt`` checkpoint of ours or an official YOLOv5 release (through
    the restricted loader of ``utils/checkpoint.py``, Conv+BN fused when ``autoshape``), or an export (``.onnx``,
    ``.torchscript``, ``*_openvino_model/``, ``.engine``) through the engine's ``AutoBackend``; or one of our models.

    Detectors are wrapped in ``AutoShape`` when ``autoshape``; classifiers are returned as they are (call them on BCHW
    tensors), as YOLOv5 does.
    """
    with _log_level(verbose):
        dev = select_device(device)
        if isinstance(path, nn.Module):
            model = path.to(dev).eval()
        else:
            p = Path(str(resolve_weights(path)))  # a URL or an official name is downloaded (utils/weights.py)
            if p.suffix == "" and not p.is_dir():
                p = p.with_suffix(".pt")
            if not p.exists():
                raise FileNotFoundError(f"custom: weights '{p}' not found (relative to {Path.cwd()}); pass path= a .pt "
                                        f"checkpoint or an export (.onnx, .torchscript, *_openvino_model/)")
            if p.suffix != ".pt":
                backend = load_backend(p, device=dev, fuse=True, verbose=verbose)
                if backend.metadata.get("task") == "classify" or not autoshape:
                    return backend
                return AutoShape(backend, verbose=verbose)
            model = load_model(p, device=dev, fuse=autoshape)
        if isinstance(model, ClassificationModel):
            if autoshape:
                LOGGER.warning("a classification model: AutoShape is for detectors, so the model itself is "
                               "returned; call it on BCHW tensors, e.g. model(torch.zeros(1, 3, 224, 224))")
            return model
        return AutoShape(model, verbose=verbose) if autoshape else model


# ----------------------------------------------------------------------------------------------------
# AutoShape: images of any kind in, Detections out
# ----------------------------------------------------------------------------------------------------


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read()
    except OSError as e:
        raise ConnectionError(f"{url}: could not be fetched ({e})") from None


def read_image(im: Any, i: int = 0) -> tuple[np.ndarray, str]:
    """One input as an HWC RGB (or as-given numpy) array with 3 channels, and its file name for saving (``.jpg``)."""
    from PIL import Image, ImageOps

    f = f"image{i}"
    if isinstance(im, (str, Path)):
        s = str(im)
        if s.startswith(("http://", "https://")):
            im, f = Image.open(io.BytesIO(_fetch(s))), urllib.parse.urlsplit(s).path or f
        else:
            im, f = Image.open(s), s
    if isinstance(im, Image.Image):
        f = f if f != f"image{i}" else (getattr(im, "filename", "") or f)
        im = ImageOps.exif_transpose(im)
        im = np.asarray(im if im.mode in ("RGB", "L") else im.convert("RGB"))
    if not isinstance(im, np.ndarray):
        raise TypeError(f"image {i}: a {type(im).__name__}; AutoShape takes file paths, URLs, PIL images, numpy HWC "
                        f"arrays (RGB), lists of these, or a BCHW torch tensor")
    if im.ndim == 3 and im.shape[0] < 5 and im.shape[2] >= 5:  # CHW (a dataloader's layout)
        im = im.transpose(1, 2, 0)
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    elif im.ndim == 3 and im.shape[2] == 1:
        im = np.repeat(im, 3, axis=2)
    elif im.ndim == 3:
        im = im[..., :3]
    else:
        raise ValueError(f"image {i}: an array of shape {im.shape}; expected HWC (or HW greyscale)")
    return np.ascontiguousarray(im), Path(Path(f).name or f"image{i}").with_suffix(".jpg").name


class AutoShape(nn.Module):
    """Wraps a detector (our ``Model``, or an ``AutoBackend`` of an export): letterboxing, inference, NMS and boxes
    scaled back to each image; returns ``Detections``. NMS settings are the attributes below (YOLOv5's names)."""

    conf = 0.25  # confidence threshold
    iou = 0.45  # NMS IoU threshold
    agnostic = False  # class-agnostic NMS
    multi_label = False  # several labels per box
    classes = None  # keep only these class indices, e.g. [0, 2]
    max_det = 1000  # detections kept per image
    amp = False  # autocast inference (CUDA only)

    def __init__(self, model: nn.Module, verbose: bool = True):
        super().__init__()
        from ultralytics.nn.autobackend import AutoBackend

        if verbose:
            LOGGER.info("Adding AutoShape... ")
        self.dmb = isinstance(model, AutoBackend)  # an export (or any format) behind the engine's backend
        self.pt = not self.dmb or model.format == "pt"
        self.model = model.eval()
        for k in ("yaml", "nc", "hyp", "names", "stride"):
            v = getattr(model, k, None)
            if v is not None:
                setattr(self, k, v)

    def _device(self) -> tuple[torch.device, torch.dtype]:
        if self.dmb:
            return torch.device(self.model.device), torch.float32  # the backend casts to fp16 itself
        p = next(self.model.parameters())
        return p.device, p.dtype

    def _inference_shape(self, shapes: list[tuple[int, int]], size: tuple[int, int]) -> list[int]:
        """YOLOv5's rule: each image scaled so that its longer side is ``max(size)``; the largest height and width of
        these, rounded up to the stride. A fixed-shape export takes its own shape instead."""
        from ultralytics.utils.ops import make_divisible

        if not self.pt and not self.model.metadata.get("dynamic") and getattr(self.model, "imgsz", None):
            return [int(x) for x in self.model.imgsz]
        gs = int(torch.as_tensor(self.stride).max()) if getattr(self, "stride", None) is not None else 32
        scaled = [[int(d * max(size) / max(s)) for d in s] for s in shapes]
        return [int(make_divisible(x, gs)) for x in np.array(scaled).max(0)]

    @torch.no_grad()
    def forward(self, ims: Any, size: int | tuple[int, int] = 640, augment: bool = False, profile: bool = False):
        from ultralytics.data.augment import LetterBox
        from ultralytics.utils.nms import non_max_suppression
        from ultralytics.utils.ops import Profile, scale_boxes

        dev, dtype = self._device()
        dt = (Profile(device=dev), Profile(device=dev), Profile(device=dev))
        autocast = self.amp and dev.type != "cpu"
        kwargs = {"augment": augment, **({"profile": profile} if profile and not self.dmb else {})}
        with dt[0]:
            size = (size, size) if isinstance(size, int) else tuple(size)
            if isinstance(ims, torch.Tensor):
                with torch.autocast(dev.type, enabled=autocast):
                    return self.model(ims.to(dev).type(dtype), **kwargs)
            ims = list(ims) if isinstance(ims, (list, tuple)) else [ims]
            arrays, files = zip(*(read_image(im, i) for i, im in enumerate(ims)))
            shape0 = [a.shape[:2] for a in arrays]
            shape1 = self._inference_shape(shape0, size)
            lb = LetterBox(tuple(shape1), auto=False)
            x = np.stack([lb(image=a) for a in arrays]).transpose(0, 3, 1, 2)
            x = torch.from_numpy(np.ascontiguousarray(x)).to(dev).type(dtype) / 255
        with torch.autocast(dev.type, enabled=autocast):
            with dt[1]:
                y = self.model(x, **kwargs)
            with dt[2]:
                y = y[0] if isinstance(y, (list, tuple)) else y
                pred = non_max_suppression(y, self.conf, self.iou, self.classes, self.agnostic, self.multi_label,
                                           max_det=self.max_det)
                for det, s in zip(pred, shape0):
                    det[:, :4] = scale_boxes(tuple(shape1), det[:, :4], s)
        return Detections(list(arrays), pred, list(files), dt, self.names, x.shape)


# ----------------------------------------------------------------------------------------------------
# Detections
# ----------------------------------------------------------------------------------------------------


class Detections:
    """The results of one ``AutoShape`` call, with YOLOv5's attributes and methods.

    ``ims`` (the HWC arrays), ``pred`` = ``xyxy`` (a ``(n, 6)`` tensor per image: x1 y1 x2 y2 conf cls, pixels of the
    original image), ``xywh``, ``xyxyn``/``xywhn`` (normalised by the image's width and height), ``names``, ``files``,
    ``n`` (images), ``t`` (pre-process, inference and NMS milliseconds per image), ``s`` (the BCHW inference shape).
    """

    XYXY = ("xmin", "ymin", "xmax", "ymax", "confidence", "class", "name")
    XYWH = ("xcenter", "ycenter", "width", "height", "confidence", "class", "name")

    def __init__(self, ims, pred, files, times=(0, 0, 0), names=None, shape=None):
        from ultralytics.utils.ops import xyxy2xywh

        self.ims, self.pred, self.files, self.times = ims, pred, files, times
        self.names = names if names is not None else {}
        self.n = len(pred)
        self.xyxy = pred
        self.xywh = [torch.cat((xyxy2xywh(p[:, :4]), p[:, 4:]), 1) for p in pred]
        gains = [torch.tensor([w, h, w, h, 1, 1], device=p.device, dtype=p.dtype)
                 for p, (h, w) in zip(pred, (im.shape[:2] for im in ims))]
        self.xyxyn = [p / g for p, g in zip(self.xyxy, gains)]
        self.xywhn = [p / g for p, g in zip(self.xywh, gains)]
        self.t = tuple(getattr(x, "t", x) / max(self.n, 1) * 1e3 for x in times)
        self.s = tuple(shape) if shape is not None else ()

    @property
    def imgs(self) -> list:  # YOLOv5 v6's name for ``ims``
        return self.ims

    def __len__(self) -> int:
        return self.n

    def _name(self, c) -> str:
        return str(self.names.get(int(c), int(c))) if isinstance(self.names, dict) else str(self.names[int(c)])

    def _line(self, i: int) -> str:
        im, det = self.ims[i], self.pred[i]
        s = f"image {i + 1}/{self.n}: {im.shape[0]}x{im.shape[1]} "
        if not len(det):
            return s + "(no detections)"
        counts = [(self._name(c), int((det[:, 5] == c).sum())) for c in det[:, 5].unique()]
        return s + ", ".join(f"{k} {name}{'s' * (k > 1)}" for name, k in counts)

    def __str__(self) -> str:
        lines = [self._line(i) for i in range(self.n)]
        speed = "Speed: %.1fms pre-process, %.1fms inference, %.1fms NMS per image" % (self.t + (0, 0, 0))[:3]
        return "\n".join([*lines, f"{speed} at shape {self.s}"])

    def __repr__(self) -> str:
        return f"YOLOv5 {self.__class__} instance\n{self}"

    def print(self) -> None:
        LOGGER.info(str(self))

    @staticmethod
    def _uint8(im: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(im if im.dtype == np.uint8 else im.clip(0, 255).astype(np.uint8))

    def _annotated(self, i: int, labels: bool = True) -> np.ndarray:
        """Image ``i`` with its boxes (and ``name conf`` labels) drawn, as a new uint8 RGB array."""
        from ultralytics.utils.plotting import Annotator, colors

        im = self._uint8(self.ims[i]).copy()
        if not len(self.pred[i]):
            return im
        annotator = Annotator(im, example=str(self.names))
        for *box, conf, cls in reversed(self.pred[i].tolist()):  # most confident drawn last, on top
            annotator.box_label(box, f"{self._name(cls)} {conf:.2f}" if labels else "", color=colors(int(cls)))
        return np.asarray(annotator.result())

    def render(self, labels: bool = True) -> list[np.ndarray]:
        """Draw the boxes into ``ims`` (as YOLOv5 does) and return them."""
        self.ims = [self._annotated(i, labels) for i in range(self.n)]
        return self.ims

    def show(self, labels: bool = True) -> None:
        from PIL import Image

        try:
            for i in range(self.n):
                Image.fromarray(self._annotated(i, labels)).show(title=self.files[i])
        except Exception as e:
            LOGGER.warning(f"Showing images is not supported in this environment: {e}")

    @staticmethod
    def _run_dir(save_dir: str | Path, exist_ok: bool) -> Path:
        from ultralytics.utils.files import increment_path

        return increment_path(Path(save_dir), exist_ok=exist_ok, sep="", mkdir=True)  # exp, exp2, exp3, ...

    def save(self, labels: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> Path:
        """Annotated images into ``save_dir`` (``exp``, ``exp2``... unless ``exist_ok``), named as ``files``; returns
        the folder."""
        from PIL import Image

        save_dir = self._run_dir(save_dir, exist_ok)
        for i in range(self.n):
            Image.fromarray(self._annotated(i, labels)).save(save_dir / self.files[i])
        LOGGER.info(f"Saved {self.n} image{'s' * (self.n > 1)} to {save_dir}")
        return save_dir

    def crop(self, save: bool = True, save_dir: str | Path = "runs/detect/exp", exist_ok: bool = False) -> list[dict]:
        """One dict per detection (``box``, ``conf``, ``cls``, ``label``, ``im``: the box widened by 2% + 10 px, in
        BGR order like YOLOv5's); with ``save`` also written to ``save_dir/crops/<class name>/<file>``."""
        from ultralytics.utils.plotting import save_one_box

        save_dir = self._run_dir(save_dir, exist_ok) if save else None
        crops = []
        for i in range(self.n):
            bgr = self._uint8(self.ims[i])[..., ::-1]
            for *box, conf, cls in reversed(self.pred[i]):
                file = save_dir / "crops" / self._name(cls) / self.files[i] if save else Path("im.jpg")
                crops.append({"box": box, "conf": conf, "cls": cls, "label": f"{self._name(cls)} {conf:.2f}",
                              "im": save_one_box(box, bgr, file=file, BGR=True, save=save)})
        if save:
            LOGGER.info(f"Saved results to {save_dir}")
        return crops

    def pandas(self) -> "Detections":
        """A copy whose ``xyxy``, ``xyxyn``, ``xywh``, ``xywhn`` are lists of DataFrames with YOLOv5's columns."""
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("results.pandas() needs pandas: pip install 'pandas>=1.5'") from None
        new = copy(self)
        for k, cols in (("xyxy", self.XYXY), ("xyxyn", self.XYXY), ("xywh", self.XYWH), ("xywhn", self.XYWH)):
            rows = [[[*r[:5], int(r[5]), self._name(r[5])] for r in p.tolist()] for p in getattr(self, k)]
            setattr(new, k, [pd.DataFrame(r, columns=list(cols)) for r in rows])
        return new

    def tolist(self) -> list["Detections"]:
        """One ``Detections`` per image: ``for r in results.tolist(): ...``."""
        return [Detections([self.ims[i]], [self.pred[i]], [self.files[i]], self.times, self.names, self.s)
                for i in range(self.n)]
