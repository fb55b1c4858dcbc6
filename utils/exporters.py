"""Export a detection model to TorchScript, ONNX and OpenVINO (TensorRT on a CUDA machine): what ``export.py`` runs.

``export_model`` exports an in-memory model; ``export.py`` loads a checkpoint and calls it, and so does the benchmark's
deployment table (``bench/deploy.py``). Each format has one function ``(wrapper, example input, path, metadata) ->
path written``; every export carries the metadata Ultralytics' ``AutoBackend`` reads and is checked against PyTorch.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import time
import warnings
from collections.abc import Callable
from copy import deepcopy
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import yaml

VERSION = "1.0"  # version string written into export metadata
AUTHOR = "yolov5-attention"
# --include name -> canonical format; file suffix of each format
ALIASES = {"torchscript": "torchscript", "ts": "torchscript", "onnx": "onnx", "openvino": "openvino",
           "engine": "engine", "tensorrt": "engine", "trt": "engine"}
SUFFIX = {"torchscript": ".torchscript", "onnx": ".onnx", "openvino": "_openvino_model", "engine": ".engine"}
INT8_FORMATS = ("openvino", "onnx")  # --int8: OpenVINO through NNCF, ONNX through ONNX Runtime's static quantizer
REQUIRES = {"torchscript": (), "onnx": ("onnx",), "openvino": ("openvino",), "engine": ("tensorrt", "onnx")}


PRETTY = {"torchscript": "TorchScript", "onnx": "ONNX", "openvino": "OpenVINO", "engine": "TensorRT"}


class ExportError(ValueError):
    """An export that cannot run as asked (unknown or missing format, --half on CPU...): one clear message."""


class DetectOutput(nn.Module):
    """Wrap a model so that its eval forward returns one tensor: for a detector in export mode (``export_mode``)
    YOLOv5's ``(bs, N, 5 + nc)``, for a classifier its ``(bs, nc)`` probabilities."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y[0] if isinstance(y, (list, tuple)) else y


@contextlib.contextmanager
def export_mode(model: nn.Module):
    """Within the block every ``Detect`` head of ``model`` is in export mode (``Detect.export = True``, as in YOLOv5):
    its eval forward gives YOLOv5's ``(bs, anchors, 5 + nc)``. The model is given back in its own mode afterwards."""
    from models.yolo import Detect

    heads = [m for m in model.modules() if isinstance(m, Detect)]
    saved = [m.__dict__.get("export") for m in heads]
    for m in heads:
        m.export = True
    try:
        yield model
    finally:
        for m, v in zip(heads, saved):
            if v is None:
                del m.export
            else:
                m.export = v


def log(msg: str) -> None:
    from ultralytics.utils import LOGGER

    LOGGER.info(msg)


@contextlib.contextmanager
def quiet_tracing():
    """Silence torch's deprecation and tracer warnings (jit.trace/jit.load, the TorchScript-based ONNX exporter)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def file_size(path: Path) -> float:
    """Size in MB of a file, or of all files in a folder."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(f.stat().st_size for f in files) / 1e6


def require(fmt: str, package: str) -> object:
    """Import the package a format needs, or raise one message saying how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        pip = {"tensorrt": "tensorrt", "onnx": "onnx", "openvino": "openvino", "onnxslim": "onnxslim",
               "onnxruntime": "onnxruntime"}.get(package, package)
        raise ExportError(f"{fmt} export needs the '{package}' package, which is not installed: "
                          f"pip install {pip}") from None


def parse_include(include: list[str] | tuple[str, ...] | str) -> list[str]:
    """Canonical format names from ``--include`` (comma- or space-separated); unknown names raise ``ExportError``."""
    items = [include] if isinstance(include, str) else list(include)
    names = [x.strip().lower() for item in items for x in str(item).split(",") if x.strip()]
    unknown = [x for x in names if x not in ALIASES]
    if unknown or not names:
        raise ExportError(f"unknown export format {', '.join(repr(x) for x in unknown) or '(none)'} in --include; "
                          f"choose from torchscript, onnx, openvino, engine (TensorRT, GPU only)")
    return list(dict.fromkeys(ALIASES[x] for x in names))


def is_classifier(model: nn.Module) -> bool:
    """Whether ``model`` is one of our classifiers (``models/classify.py``): its output is ``(batch, nc)``
    probabilities."""
    from models.classify import ClassificationModel

    return isinstance(model, ClassificationModel)


def build_metadata(model: nn.Module, weights: Path, imgsz: list[int], batch: int, dynamic: bool, half: bool,
                   int8: bool) -> dict:
    """Export metadata in the layout Ultralytics' ``AutoBackend`` reads (names, stride, imgsz, batch, task, args)."""
    task = "classify" if is_classifier(model) else "detect"
    layout = {} if task == "classify" else {"layout": "yolov5"}  # (batch, anchors, 5 + nc); see utils/backend.py
    return {
        "description": f"yolov5-attention {weights.stem} ({Path(getattr(model, 'yaml_file', '') or 'model').stem}), "
                       + ("image classifier" if task == "classify" else "YOLOv5 v6.0 anchor-based detector"),
        "author": AUTHOR,
        "date": datetime.now().astimezone().isoformat(),
        "version": VERSION,
        "stride": int(max(model.stride)),
        "task": task,
        "batch": batch,
        "imgsz": list(imgsz),
        "names": {int(k): str(v) for k, v in model.names.items()},
        "args": {"batch": batch, "imgsz": list(imgsz), "dynamic": dynamic, "half": half, "int8": int8, "nms": False},
        "channels": 3,
        "end2end": False,
        **layout,
    }


# ----------------------------------------------------------------------------------------------------
# One function per format: (wrapped model, example input, output path, metadata) -> path written
# ----------------------------------------------------------------------------------------------------


def export_torchscript(wrapper: nn.Module, im: torch.Tensor, file: Path, metadata: dict) -> Path:
    """Trace to TorchScript; metadata goes into the archive's ``extra/config.txt`` as JSON."""
    f = file.with_suffix(".torchscript")
    ts = torch.jit.trace(wrapper, im, strict=False)
    ts.save(str(f), _extra_files={"config.txt": json.dumps(metadata)})
    return f


def export_onnx(wrapper: nn.Module, im: torch.Tensor, file: Path, metadata: dict, opset: int = 17,
                dynamic: bool = False, simplify: bool = False) -> Path:
    """Export to ONNX (input ``images``, output ``output0``), optionally slimmed; metadata in ``metadata_props``."""
    onnx = require("ONNX", "onnx")
    f = file.with_suffix(".onnx")
    out_axes = {0: "batch"} if metadata.get("task") == "classify" else {0: "batch", 1: "anchors"}
    axes = {"images": {0: "batch", 2: "height", 3: "width"}, "output0": out_axes} if dynamic else None
    torch.onnx.export(wrapper, (im,), str(f), opset_version=opset, dynamo=False, do_constant_folding=True,
                      input_names=["images"], output_names=["output0"], dynamic_axes=axes)
    model_onnx = onnx.load(str(f))
    onnx.checker.check_model(model_onnx)
    if simplify:
        onnxslim = require("ONNX --simplify", "onnxslim")
        log(f"ONNX: slimming with onnxslim {onnxslim.__version__}...")
        model_onnx = onnxslim.slim(model_onnx)
    del model_onnx.metadata_props[:]
    for k, v in metadata.items():
        entry = model_onnx.metadata_props.add()
        entry.key, entry.value = k, str(v)
    onnx.save(model_onnx, str(f))
    return f


def export_openvino(wrapper: nn.Module, im: torch.Tensor, file: Path, metadata: dict, dynamic: bool = False,
                    half: bool = False, calibration: list | None = None) -> Path:
    """Convert to OpenVINO IR in ``<name>_openvino_model/`` (fp16-compressed weights with ``half``), with a
    ``metadata.yaml`` beside the ``.xml``. With ``calibration`` (a list of input arrays) the model is quantized to INT8
    with NNCF and saved in ``<name>_int8_openvino_model/``."""
    ov = require("OpenVINO", "openvino")
    d = file.parent / f"{file.stem}{'_int8' if calibration else ''}_openvino_model"
    shape = [-1, 3, -1, -1] if dynamic else list(im.shape)
    ov_model = ov.convert_model(wrapper, input=[ov.PartialShape(shape)], example_input=im)
    ov_model.inputs[0].get_tensor().set_names({"images"})
    ov_model.outputs[0].get_tensor().set_names({"output0"})
    if calibration:
        nncf = require("OpenVINO --int8", "nncf")
        from utils.quantize import quantize_openvino

        log(f"OpenVINO: INT8 post-training quantization with NNCF {nncf.__version__} on {len(calibration)} "
            f"calibration batches...")
        ov_model = quantize_openvino(ov_model, calibration)
    d.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(d / f"{file.stem}.xml"), compress_to_fp16=half)
    with open(d / "metadata.yaml", "w", encoding="utf-8") as fh:
        yaml.safe_dump(metadata, fh, sort_keys=False, allow_unicode=True)
    return d


def export_onnx_int8(wrapper: nn.Module, im: torch.Tensor, file: Path, metadata: dict, calibration: list,
                     opset: int = 17, dynamic: bool = False, simplify: bool = False) -> Path:
    """ONNX Runtime static INT8 quantization (QDQ) of the ONNX export, saved as ``<name>_int8.onnx``."""
    import tempfile

    ort = require("ONNX --int8", "onnxruntime")
    from utils.quantize import quantize_onnx

    f = file.parent / f"{file.stem}_int8.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_onnx(wrapper, im, Path(tmp) / file.name, metadata, opset, dynamic, simplify)
        log(f"ONNX: INT8 static quantization (QDQ) with onnxruntime {ort.__version__} on {len(calibration)} "
            f"calibration batches...")
        quantize_onnx(fp32, f, calibration)
    return f


def no_gpu_message() -> str:
    """Why a TensorRT export cannot run here."""
    why = "got --device cpu" if torch.cuda.is_available() else "no CUDA device is available here"
    return f"TensorRT export (--include engine) needs a CUDA GPU and --device 0 ({why})"


def export_engine(wrapper: nn.Module, im: torch.Tensor, file: Path, metadata: dict, opset: int = 17,
                  dynamic: bool = False, half: bool = False, workspace_gb: int = 4) -> Path:
    """Build a TensorRT engine from the ONNX graph; the file starts with the metadata header ``AutoBackend`` reads
    (4-byte little-endian length, then JSON), followed by the serialized engine."""
    if im.device.type != "cuda":
        raise ExportError(no_gpu_message())
    trt = require("TensorRT", "tensorrt")
    onnx_file = export_onnx(wrapper, im, file, metadata, opset, dynamic, simplify=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gb << 30)
    trt10 = int(trt.__version__.split(".")[0]) >= 10
    explicit = 0 if trt10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # the default from TRT 10
    network = builder.create_network(explicit)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {onnx_file}: {errors}")
    if dynamic:
        profile = builder.create_optimization_profile()
        b, c, h, w = im.shape
        for i in range(network.num_inputs):
            profile.set_shape(network.get_input(i).name, (1, c, h, w), (max(1, b // 2), c, h, w), (b, c, h, w))
        config.add_optimization_profile(profile)
    if half:
        config.set_flag(trt.BuilderFlag.FP16)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError("TensorRT failed to build the engine (see the messages above)")
    f = file.with_suffix(".engine")
    header = json.dumps(metadata).encode()
    with open(f, "wb") as fh:
        fh.write(len(header).to_bytes(4, byteorder="little", signed=True))
        fh.write(header)
        fh.write(engine)
    return f


# ----------------------------------------------------------------------------------------------------
# Checks and the export run
# ----------------------------------------------------------------------------------------------------


def verify(path: Path, reference: torch.Tensor, im: torch.Tensor) -> float:
    """Run the export (for OpenVINO: its IR at fp32 precision; otherwise through ``AutoBackend``, as ``detect.py`` and
    ``val.py`` load it) and return max |export - PyTorch| on its own output tensor (YOLOv5's layout for detectors)."""
    y = export_output(path, im).to(reference.device, torch.float32)
    if y.shape != reference.shape:
        raise ExportError(f"{path}: output shape {tuple(y.shape)} differs from PyTorch {tuple(reference.shape)}")
    return float((y - reference.float()).abs().max())


def export_output(path: Path, im: torch.Tensor) -> torch.Tensor:
    """The export's own output tensor on ``im`` (OpenVINO at fp32 inference precision, others through AutoBackend,
    unconverted)."""
    if path.is_dir() and path.name.endswith("_openvino_model"):
        import openvino as ov

        # CPUs with bf16 units run OpenVINO in bf16 by default; check the exported graph itself at fp32
        compiled = ov.Core().compile_model(str(next(path.glob("*.xml"))), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        y = torch.from_numpy(compiled(im.float().cpu().numpy())[0])
    else:
        from utils.checkpoint import load_backend

        backend = load_backend(path, device=im.device, half=im.dtype == torch.float16, raw=True)
        y = backend(im)
        y = y[0] if isinstance(y, (list, tuple)) else y
    return torch.as_tensor(y)


class ExportJob(NamedTuple):
    """What every exporter reads: the wrapped model (and a float CPU copy for the CPU-only toolchains), the example
    input, the output path stem, metadata and the options."""

    wrapper: nn.Module
    cpu_wrapper: Callable[[], nn.Module]
    im: torch.Tensor
    file: Path
    metadata: dict
    opset: int
    dynamic: bool
    simplify: bool
    half: bool
    calibration: list | None  # INT8 calibration batches (None: no quantization)


def _onnx(j: ExportJob) -> Path:
    if j.calibration is not None:
        return export_onnx_int8(j.cpu_wrapper(), j.im.float().cpu(), j.file, j.metadata, j.calibration, j.opset,
                                j.dynamic, j.simplify)
    return export_onnx(j.wrapper, j.im, j.file, j.metadata, j.opset, j.dynamic, j.simplify)


# --include format -> exporter; each returns the path it wrote
EXPORTERS: dict[str, Callable[[ExportJob], Path]] = {
    "torchscript": lambda j: export_torchscript(j.wrapper, j.im, j.file, j.metadata),
    "onnx": _onnx,
    "openvino": lambda j: export_openvino(j.cpu_wrapper(), j.im.float().cpu(), j.file, j.metadata, j.dynamic, j.half,
                                          j.calibration),
    "engine": lambda j: export_engine(j.wrapper, j.im, j.file, j.metadata, j.opset, j.dynamic, j.half),
}


def check_request(formats: list[str], device: torch.device, half: bool, int8: bool) -> None:
    """Refuse what cannot run as asked (INT8 of other formats, TensorRT without a GPU, missing packages, CPU --half)."""
    if int8:
        others = [PRETTY[f] for f in formats if f not in INT8_FORMATS]
        if others:
            raise ExportError(f"--int8 quantizes openvino (NNCF) and onnx (ONNX Runtime) exports, not "
                              f"{', '.join(others)}; export those in a separate run without --int8")
        if "openvino" in formats:
            require("OpenVINO --int8", "nncf")
    if "engine" in formats and device.type != "cuda":
        raise ExportError(no_gpu_message())
    for fmt in formats:
        for pkg in REQUIRES[fmt]:
            require(PRETTY[fmt], pkg)
    if half and device.type == "cpu" and set(formats) & {"torchscript", "onnx"}:
        raise ExportError("--half for torchscript/onnx needs a CUDA device (--device 0); on CPU, --half applies to "
                          "openvino only (fp16-compressed weights)")


def check_export(fmt: str, f: Path, check_im: torch.Tensor, reference: torch.Tensor, int8: bool) -> tuple[dict, str]:
    """Compare an export with PyTorch on ``check_im``: the result fields and the text for the log line."""
    cpu = fmt == "openvino" or int8
    v_im, v_ref = (check_im.float().cpu(), reference.cpu()) if cpu else (check_im, reference)
    with quiet_tracing():
        diff = verify(f, v_ref, v_im)
    out, msg = {"max_abs_diff": diff}, f", max abs diff vs PyTorch {diff:.2e}"
    if int8:
        from utils.quantize import agreement

        with quiet_tracing():
            from utils.backend import yolov5_to_engine

            y = yolov5_to_engine(export_output(f, v_im).float())  # scores as NMS sees them: objectness x class
            a = out["agreement"] = agreement(y.numpy(), yolov5_to_engine(v_ref.float()).numpy())
        msg += (f" (on a calibration image; class-score correlation {a['score_corr']:.4f}, box error "
                f"of {a['n_confident']} confident anchors {a['box_max_diff']:.2f}px)")
    return out, msg


def export_model(model: nn.Module, weights: str | Path, include: list[str] | tuple[str, ...] = ("onnx",),
                 imgsz: list[int] | tuple[int, ...] = (640, 640), batch_size: int = 1, dynamic: bool = False,
                 simplify: bool = False, opset: int = 17, half: bool = False, int8: bool = False,
                 check: bool = True, data: str | Path = "data/shapes.yaml", calib_images: int = 300,
                 save_dir: str | Path | None = None) -> dict[str, dict]:
    """Export an in-memory model (our ``Model`` in eval mode, any device) as if it had been loaded from ``weights``.

    The files are named after ``weights`` and written into ``save_dir`` (default: the folder of ``weights``).

    With ``int8``, ``openvino`` and ``onnx`` are quantized after export, calibrated on ``calib_images`` images of
    ``data``'s train split; the check then runs on a calibration image and also reports ``agreement`` (class-score
    correlation, box error of confident detections; see ``utils.quantize.agreement``).

    Returns ``{format: {"file": Path, "seconds": float, "max_abs_diff": float | None}}`` (+ ``"agreement"`` for int8).
    """
    from ultralytics.utils.checks import check_imgsz

    formats = parse_include(include)
    if int8 and is_classifier(model):
        raise ExportError("--int8 calibrates on detection data; INT8 export of classifiers is not supported yet")
    device = next(model.parameters()).device
    check_request(formats, device, half, int8)
    weights = Path(weights)
    check_options(imgsz, batch_size, opset, calib_images)
    gs = int(max(model.stride))
    imgsz = check_imgsz(list(imgsz) * 2 if len(imgsz) == 1 else list(imgsz), stride=gs, min_dim=2)  # round up, warn
    model = model.eval()
    for p in model.parameters():
        p.requires_grad = False
    gpu_half = half and device.type != "cpu"
    if gpu_half:
        model = model.half()
    with export_mode(model):  # detectors give YOLOv5's (bs, anchors, 5 + nc) in every export
        wrapper = DetectOutput(model).eval()

        def cpu_wrapper() -> nn.Module:
            return wrapper if device.type == "cpu" else DetectOutput(deepcopy(model).float().cpu()).eval()

        im = torch.zeros(batch_size, 3, *imgsz, device=device, dtype=torch.float16 if gpu_half else torch.float32)
        with torch.no_grad():
            for _ in range(2):
                y = wrapper(im)
        metadata = build_metadata(model, weights, imgsz, batch_size, dynamic, half, int8)
        log(f"\nPyTorch: starting from {weights} with input shape {tuple(im.shape)} BCHW and output shape "
            f"{tuple(y.shape)} ({file_size(weights) if weights.exists() else 0:.1f} MB)")

        check_im = torch.rand_like(im)
        calibration = None
        if int8:
            from utils.quantize import calibration_images

            calibration = calibration_images(data, imgsz, calib_images, gs, batch_size)
            log(f"\nINT8: {len(calibration) * batch_size} calibration images from {data}, letterboxed to {imgsz}")
            check_im = torch.from_numpy(calibration[0]).to(im)  # a real image: random noise says little about INT8
        with torch.no_grad():
            reference = wrapper(check_im).float()
        out = Path(save_dir) / weights.name if save_dir is not None else weights
        job = ExportJob(wrapper, cpu_wrapper, im, out, metadata, opset, dynamic, simplify, half, calibration)
        results: dict[str, dict] = {}
        for fmt in formats:
            t = time.perf_counter()
            log(f"\n{PRETTY[fmt]}: starting export...")
            with torch.no_grad(), quiet_tracing():
                f = EXPORTERS[fmt](job)
            dt = time.perf_counter() - t
            results[fmt] = {"file": f, "seconds": dt, "max_abs_diff": None}
            check_msg = ""
            if check:
                checked, check_msg = check_export(fmt, f, check_im, reference, int8)
                results[fmt].update(checked)
            log(f"{PRETTY[fmt]}: export success ✅ {dt:.1f}s, saved as {f} ({file_size(f):.1f} MB){check_msg}")
    if gpu_half:
        model.float()
    return results


def check_options(imgsz: list[int] | tuple[int, ...], batch_size: int, opset: int, calib_images: int) -> None:
    """Numbers out of range fail here, before anything is loaded or written."""
    from utils.cli import check_image_size, check_number

    check_image_size("--imgsz", imgsz)
    check_number("--batch-size", batch_size, 1)
    check_number("--opset", opset, 7)
    check_number("--calib-images", calib_images, 1)


def output_dir(weights: Path, project: str | Path | None = None, name: str | None = None,
               exist_ok: bool = False) -> Path:
    """Where ``export.py`` writes: the folder of the weights (YOLOv5's default), or ``--project DIR``; with
    ``--name NAME`` the folder ``DIR/NAME``, incremented (``NAME2``, ``NAME3``...) unless ``exist_ok``."""
    from utils.engine import increment_dir

    base = Path(project) if project else weights.parent
    return increment_dir(base / name, exist_ok) if name else base


def check_writable(folder: Path, chosen: bool = True) -> None:
    """Create ``folder`` if needed and make sure a file can be written in it (os.access alone says yes to root on a
    read-only file system), else one ``ExportError`` naming the folder. ``chosen``: the user named it (--project)."""
    import tempfile

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        what = f"the output folder {folder}" if chosen else f"{folder}, the folder of the weights,"
        raise ExportError(f"cannot write the exports into {what} ({why}); choose a folder you can write to with "
                          f"--project DIR (and --name NAME)") from None
