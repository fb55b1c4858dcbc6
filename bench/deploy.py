"""Deployment speed and accuracy: one model in each CPU runtime and precision, side by side.

Variants (``VARIANTS``; the file each needs comes from ``utils/exporters.py``, as with ``export.py``):

=====================  ===================================================================================
``pytorch``            PyTorch fp32, Conv+BN fused (the baseline)
``onnxruntime``        ONNX Runtime fp32 (CPUExecutionProvider) on ``<name>.onnx``
``onnxruntime-int8``   ONNX Runtime on ``<name>_int8.onnx`` (static INT8, QDQ; ``export.py --int8``)
``openvino-f32``       OpenVINO on ``<name>_openvino_model/`` with ``INFERENCE_PRECISION_HINT`` f32
``openvino-bf16``      the same IR at bf16 inference precision (CPUs whose OpenVINO capabilities list BF16)
``openvino-fp16``      an fp16-compressed IR (``export.py --half``) run at f32: smaller file, same CPU compute
``openvino-int8``      OpenVINO on ``<name>_int8_openvino_model/`` (NNCF INT8; float ops left in f32)
``openvino-int8-bf16`` the INT8 IR with its remaining float ops in bf16 (BF16 CPUs)
=====================  ===================================================================================

``python benchmarks.py --formats onnx,openvino [--map best.pt]`` times (and scores) them; for each model row it does::

    targets = export_variants(model, "yolov5s-ema", variants, imgsz=640, save_dir=d, data="data/shapes.yaml")
    calls = variant_calls(targets, np.random.rand(1, 3, 640, 640).astype(np.float32), threads=2)  # timed interleaved
    rows = map_rows(weights_pt, "data/shapes.yaml", imgsz=640, save_dir=d, targets=targets)  # mAP of each (val.py)
"""

from __future__ import annotations

import contextlib
import re
from copy import deepcopy
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from bench import BenchmarkError
from utils.exporters import export_model
from utils.validation import validate

# variant -> (file kind made by export.py, OpenVINO inference precision hint or None)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "pytorch": ("pt", None),
    "onnxruntime": ("onnx", None),
    "onnxruntime-int8": ("onnx-int8", None),
    "openvino-f32": ("openvino", "f32"),
    "openvino-bf16": ("openvino", "bf16"),
    "openvino-fp16": ("openvino-fp16", "f32"),
    "openvino-int8": ("openvino-int8", "f32"),
    "openvino-int8-bf16": ("openvino-int8", "bf16"),
}
BF16_VARIANTS = tuple(k for k, (_, hint) in VARIANTS.items() if hint == "bf16")


def openvino_capabilities() -> list[str]:
    """The CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (e.g. FP32, BF16, INT8); empty without OpenVINO."""
    try:
        import openvino as ov

        return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # openvino missing or no CPU plugin
        return []


def bf16_supported() -> bool:
    return "BF16" in openvino_capabilities()


def default_variants() -> list[str]:
    """Every variant this machine can run (bf16 ones only where OpenVINO reports BF16), without ``openvino-fp16``."""
    bf16 = bf16_supported()
    return [v for v in VARIANTS if v != "openvino-fp16" and (bf16 or v not in BF16_VARIANTS)]


RUNTIMES = ("onnx", "openvino")  # --formats shorthands: every variant of the runtime that this CPU can run


def variants_for_formats(formats: Iterable[str], int8: bool = True) -> list[str]:
    """The variants behind ``benchmarks.py --formats onnx,openvino``: fp32, bf16 (where the CPU has it) and INT8 of
    each runtime (INT8 left out with ``int8=False``)."""
    formats = {f.strip().lower() for f in formats}
    bad = formats - set(RUNTIMES)
    if bad:
        raise ValueError(f"--formats {', '.join(sorted(bad))}: unknown; choose from {', '.join(RUNTIMES)}")
    return [v for v in default_variants() if v != "pytorch" and VARIANTS[v][0].split("-")[0] in formats
            and (int8 or "int8" not in v)]


def check_variants(variants: Iterable[str]) -> list[str]:
    out = list(dict.fromkeys(variants))
    bad = [v for v in out if v not in VARIANTS]
    if bad:
        raise ValueError(f"unknown deployment variant {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    if not bf16_supported() and any(v in BF16_VARIANTS for v in out):
        raise ValueError(f"{', '.join(v for v in out if v in BF16_VARIANTS)}: this CPU has no BF16 support in "
                         f"OpenVINO (capabilities {openvino_capabilities()})")
    return out


# ----------------------------------------------------------------------------------------------------
# Files: export what the variants need
# ----------------------------------------------------------------------------------------------------


def export_variants(model: nn.Module, name: str, variants: Iterable[str], imgsz: int | Sequence[int], save_dir: Path,
                    data: str | Path = "data/shapes.yaml", calib_images: int = 300,
                    batch_size: int = 1) -> dict[str, Any]:
    """Export ``model`` (our ``Model``, any state) for each variant into ``save_dir``; returns ``{variant: target}``,
    the target being the fused float32 CPU model for ``pytorch`` and the exported file/folder otherwise."""
    variants = check_variants(variants)
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    imgsz = [imgsz] if isinstance(imgsz, int) else list(imgsz)
    cpu = fused(model)  # as export.py exports a checkpoint
    kinds = {VARIANTS[v][0] for v in variants}
    made: dict[str, Path] = {}

    def export(stem: str, include: list[str], **kw) -> dict[str, dict]:
        return export_model(deepcopy(cpu), save_dir / f"{stem}.pt", include, imgsz=imgsz, batch_size=batch_size,
                            check=False, **kw)

    fp32 = [f for f, k in (("onnx", "onnx"), ("openvino", "openvino")) if k in kinds]
    if fp32:
        made |= {k: r["file"] for k, r in export(name, fp32).items()}
    int8 = [f for f, k in (("onnx", "onnx-int8"), ("openvino", "openvino-int8")) if k in kinds]
    if int8:
        made |= {f"{k}-int8": r["file"] for k, r in
                 export(name, int8, int8=True, data=data, calib_images=calib_images).items()}
    if "openvino-fp16" in kinds:
        made["openvino-fp16"] = export(f"{name}_fp16", ["openvino"], half=True)["openvino"]["file"]
    out: dict[str, Any] = {}
    for v in variants:
        kind = VARIANTS[v][0]
        out[v] = cpu if kind == "pt" else made[kind]
    return out


def fused(model: nn.Module) -> nn.Module:
    m = deepcopy(model).cpu().float().eval()
    if callable(getattr(m, "fuse", None)):
        m.fuse(verbose=False)
    return m


# ----------------------------------------------------------------------------------------------------
# Runners: one inference call per variant
# ----------------------------------------------------------------------------------------------------


def runner(variant: str, target: Any, threads: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``x (bs, 3, h, w) float32 -> (bs, 4 + nc, N)`` running ``target`` as ``variant`` says, with
    ``threads`` intra-op threads (default: ``torch.get_num_threads()``; for ``pytorch`` this sets the process-wide
    ``torch.set_num_threads``)."""
    kind, hint = VARIANTS[check_variants([variant])[0]]
    threads = threads or torch.get_num_threads()
    if kind == "pt":
        torch.set_num_threads(threads)
        model = target

        def run_pt(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                y = model(torch.from_numpy(x))
            return (y[0] if isinstance(y, (list, tuple)) else y).numpy()

        return run_pt
    if kind.startswith("onnx"):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        # idle workers must not spin: interleaved with other runtimes they would steal the cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(target), so, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: engine_layout(session.run(None, {name: x})[0])
    import openvino as ov

    xml = next(Path(target).glob("*.xml")) if Path(target).is_dir() else Path(target)
    config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    compiled = ov.Core().compile_model(str(xml), "CPU", config)
    return lambda x: engine_layout(compiled(x)[0])


def engine_layout(y: np.ndarray) -> np.ndarray:
    """An export's output as PyTorch gives it, ``(bs, 4 + nc, N)``: exports in YOLOv5's ``(bs, N, 5 + nc)`` are
    converted (``utils.backend``, the conversion val.py and detect.py use), older ones are returned as they are."""
    from utils.backend import YOLOV5, layout_of, yolov5_to_engine

    t = torch.from_numpy(np.asarray(y))
    return yolov5_to_engine(t).numpy() if layout_of(t, None) == YOLOV5 else y


def variant_calls(targets: dict[str, Any], im: np.ndarray, threads: int | None = None) -> dict[str, Callable[[], Any]]:
    """Zero-argument calls (one inference of ``im`` each) per variant, for the interleaved timer (``bench.timing``)."""
    x = np.ascontiguousarray(im, dtype=np.float32)
    return {v: (lambda f=runner(v, t, threads): f(x)) for v, t in targets.items()}


# ----------------------------------------------------------------------------------------------------
# mAP of each variant, as val.py scores it
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def openvino_precision(hint: str | None) -> Iterator[None]:
    """Within the block, every OpenVINO ``compile_model`` (AutoBackend's included) gets ``INFERENCE_PRECISION_HINT``
    ``hint``: AutoBackend compiles with the CPU's default, which is bf16 on CPUs with BF16 units."""
    if hint is None:
        yield
        return
    import openvino as ov

    original = ov.Core.compile_model

    def compile_model(self, model, device_name=None, config=None, **kwargs):
        return original(self, model, device_name, {**(config or {}), "INFERENCE_PRECISION_HINT": hint}, **kwargs)

    ov.Core.compile_model = compile_model
    try:
        yield
    finally:
        ov.Core.compile_model = original


def map_rows(weights: str | Path, data: str | Path, imgsz: int, save_dir: Path, variants: Iterable[str] | None = None,
             calib_images: int = 300, targets: dict[str, Any] | None = None, device: str = "cpu") -> list[dict]:
    """mAP@.5 and mAP@.5:.95 (in %) of each variant of ``weights`` (a trained ``.pt``) on ``data``'s val split at
    ``imgsz`` as val.py scores it (PyTorch on ``device``, the exports on CPU). Exports at ``imgsz`` into
    ``save_dir`` unless ``targets`` (from ``export_variants``) are given.

    PyTorch is scored the way the exports are (batch 1, square letterboxed images; val.py's default rectangular
    batches score a little differently), so ``delta_map50_95``, the difference to PyTorch's mAP@.5:.95, is the
    runtime's and precision's alone; ``delta_vs_fp32_export`` compares with the fp32 export of the same runtime
    (``onnxruntime`` or ``openvino-f32``, when measured)."""
    from utils.checkpoint import load_model

    variants = check_variants(variants or default_variants())
    weights = Path(weights)
    if targets is None:
        targets = export_variants(load_model(weights, fuse=False), weights.stem, variants, imgsz, save_dir,
                                  calib_images=calib_images, data=data)
    rows = []
    for v in variants:
        source = weights if VARIANTS[v][0] == "pt" else targets[v]
        with openvino_precision(VARIANTS[v][1]):
            stats = validate(data=str(data), weights=[str(source)], imgsz=imgsz, batch_size=1, rect=False,
                            device=device if source == weights else "cpu", plots=False,
                            project=Path(save_dir) / "val", name=v, exist_ok=True)[0]
        rows.append({"variant": v, "file": str(source), "map50": 100 * float(stats["metrics/mAP50(B)"]),
                     "map50_95": 100 * float(stats["metrics/mAP50-95(B)"])})
    by = {r["variant"]: r["map50_95"] for r in rows}
    for r in rows:
        fp32 = by.get("onnxruntime" if r["variant"].startswith("onnx") else "openvino-f32")
        r["delta_map50_95"] = r["map50_95"] - by["pytorch"] if "pytorch" in by else None
        r["delta_vs_fp32_export"] = None if r["variant"] == "pytorch" or fp32 is None else r["map50_95"] - fp32
    return rows


# ----------------------------------------------------------------------------------------------------
# benchmarks.py --formats and --map
# ----------------------------------------------------------------------------------------------------


def parse_formats(formats: str | Iterable[str] | None) -> list[str]:
    """The deployment variants behind ``--formats``: a runtime (``onnx``, ``openvino``: its fp32, bf16 where the CPU
    has it, and INT8 variants) or variant names such as ``openvino-int8``."""
    if not formats:
        return []
    items = formats.split(",") if isinstance(formats, str) else [f for x in formats for f in str(x).split(",")]
    variants: list[str] = []
    for f in (x.strip().lower() for x in items if x.strip()):
        if f in RUNTIMES:
            variants += variants_for_formats([f])
        elif f in VARIANTS and f != "pytorch":
            variants.append(f)
        else:
            choices = [*RUNTIMES, *(v for v in VARIANTS if v != "pytorch")]
            raise BenchmarkError(f"--formats {f}: unknown; choose from {', '.join(choices)}")
    try:
        return check_variants(variants)
    except ValueError as e:
        raise BenchmarkError(f"--formats: {e}") from e


def export_calls(model: nn.Module, name: str, variants: list[str], im: torch.Tensor, save_dir: Path, data: str,
                 calib_images: int) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """Export ``model`` for each variant (INT8 calibrated on ``data``); return per variant a call running it on ``im``
    and the exported files (for mAP)."""
    stem = re.sub(r"[^\w-]+", "_", name).strip("_")  # "yolov5s-ema [exp/best.pt]" -> "yolov5s-ema_exp_best_pt"
    targets = export_variants(model, stem, variants, list(im.shape[2:]), save_dir / "export", data=data,
                              calib_images=calib_images, batch_size=im.shape[0])
    return variant_calls(targets, im.cpu().float().numpy(), torch.get_num_threads()), targets


def measure_map(weights: Path, data: str, imgsz: int, device: str, save_dir: Path) -> tuple[float, float]:
    """(mAP@.5, mAP@.5:.95) in % of ``weights`` on ``data`` with val.py's defaults."""
    stats = validate(data=data, weights=[str(weights)], imgsz=imgsz, device=device, plots=False,
                     project=save_dir / "val", name=weights.stem, exist_ok=True)[0]
    return 100 * float(stats["metrics/mAP50(B)"]), 100 * float(stats["metrics/mAP50-95(B)"])
