"""Export a trained detector or classifier to TorchScript, ONNX and OpenVINO (TensorRT on a CUDA machine), with YOLOv5's
command line.

Usage:
    python export.py --weights runs/train/exp/weights/best.pt --include onnx
    python export.py --weights yolov5s-ema.pt --include torchscript onnx openvino --imgsz 640 --simplify
    python export.py --weights best.pt --include onnx --dynamic --batch-size 4     # dynamic batch/height/width
    python export.py --weights best.pt --include engine --device 0 --half           # TensorRT, needs a GPU
    python export.py --weights best.pt --include openvino onnx --int8 --data data/shapes.yaml   # INT8, calibrated
    python export.py --weights runs/train-cls/exp/weights/best.pt --include onnx openvino --imgsz 64   # a classifier
    python export.py --weights /data/best.pt --include onnx --project runs/export --name exp   # runs/export/exp{,2..}/

Outputs lie next to the weights: ``best.torchscript``, ``best.onnx``, ``best_openvino_model/``, ``best.engine``; with
``--int8`` ``best_int8_openvino_model/`` (NNCF post-training quantization) and ``best_int8.onnx`` (ONNX Runtime static
QDQ quantization), calibrated on ``--calib-images`` images of the ``--data`` YAML's train split, letterboxed like
inference. The head's decode tail (sigmoid, grid/anchor arithmetic, concat) stays in float.
Each carries the class names, stride, image size and batch as metadata (read back by ``detect.py``/``val.py`` and
Ultralytics' ``AutoBackend``), outputs one tensor in YOLOv5's layout ``(batch, anchors, 5 + nc)`` (xywh in input
pixels, objectness, class probabilities; metadata ``layout: yolov5``; a classifier: ``(batch, nc)`` probabilities, task
``classify``) and is checked against PyTorch right after export (max abs diff printed). ``--int8`` is for detectors
only.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from utils import offline
from utils.exporters import (
    ExportError,
    check_options,
    check_writable,
    export_model,
    is_classifier,
    log,
    output_dir,
    parse_include,
)

offline.configure()


def run(weights: str | Path = "yolov5s.pt", include: list[str] | tuple[str, ...] = ("torchscript", "onnx"),
        imgsz: list[int] | tuple[int, ...] = (640, 640), batch_size: int = 1, device: str = "cpu",
        half: bool = False, int8: bool = False, dynamic: bool = False, simplify: bool = False, opset: int = 17,
        check: bool = True, data: str | Path = "data/shapes.yaml", calib_images: int = 300,
        project: str | Path | None = None, name: str | None = None, exist_ok: bool = False,
        allow_data_scripts: bool = False) -> dict[str, dict]:
    """Load ``weights`` (a .pt checkpoint, ours or official), export to each format of ``include``, check each.

    The exports go next to the weights, or into ``project`` (``project/name`` with ``name``; see ``output_dir``).
    ``allow_data_scripts``: with ``int8``, let the calibration data YAML's download script run.
    """
    from ultralytics.utils.torch_utils import select_device

    from utils.checkpoint import load_model
    from utils.cli import check_device, no_empty_run_dir

    t = time.perf_counter()
    parse_include(include)  # fail on a typo before loading anything
    check_options(imgsz, batch_size, opset, calib_images)
    check_device(device)
    from utils.weights import resolve_weights

    weights = Path(resolve_weights(weights))  # a URL or an official name is downloaded (utils/weights.py)
    if weights.suffix != ".pt":
        raise ExportError(f"--weights {weights}: export starts from a .pt checkpoint")
    if not weights.is_file():
        raise FileNotFoundError(f"--weights {weights}: file not found")
    if int8:  # the calibration data: checked (and fetched) before the model is loaded
        from utils.datayaml import prepare_data
        from utils.engine import resolve_data

        data = prepare_data(resolve_data(data), allow_scripts=allow_data_scripts)
    save_dir = output_dir(weights, project, name, exist_ok)
    with no_empty_run_dir(save_dir):  # a folder made for this run is removed again if no export was written
        check_writable(save_dir, chosen=bool(project or name))
        dev = select_device(str(device), verbose=False)
        model = load_model(weights, device=dev, fuse=True)
        results = export_model(model, weights, include, imgsz, batch_size, dynamic, simplify, opset, half, int8,
                               check, data, calib_images, save_dir=save_dir)
    files = [str(r["file"]) for r in results.values()]
    cls = "classify/" if is_classifier(model) else ""
    log(f"\nExport complete ({time.perf_counter() - t:.1f}s)\nResults saved to {save_dir.resolve()}"
        + "".join(f"\n{'Predict' if cls else 'Detect'}:  python {cls}{'predict' if cls else 'detect'}.py --weights {f}"
                  f"\nValidate: python {cls}val.py --weights {f}" for f in files))
    return results


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=str, default="yolov5s.pt", help="model.pt path")
    p.add_argument("--imgsz", "--img", "--img-size", nargs="+", type=int, default=[640], help="image (h, w)")
    p.add_argument("--batch-size", type=int, default=1, help="batch size")
    p.add_argument("--device", default="cpu", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--half", action="store_true", help="FP16 half-precision export (GPU for onnx/torchscript)")
    p.add_argument("--int8", action="store_true",
                   help="INT8 post-training quantization: openvino (NNCF) and onnx (ONNX Runtime static QDQ)")
    p.add_argument("--data", type=str, default="data/shapes.yaml",
                   help="--int8: dataset.yaml of the calibration images")
    p.add_argument("--calib-images", type=int, default=300, help="--int8: number of calibration images")
    p.add_argument("--allow-data-scripts", action="store_true",
                   help="--int8: let the --data YAML's download: script (Python or bash) run")
    p.add_argument("--dynamic", action="store_true", help="ONNX/OpenVINO: dynamic batch and image size")
    p.add_argument("--simplify", action="store_true", help="ONNX: slim the graph with onnxslim")
    p.add_argument("--opset", type=int, default=17, help="ONNX: opset version")
    p.add_argument("--include", nargs="+", default=["torchscript", "onnx"],
                   help="torchscript, onnx, openvino, engine (TensorRT, GPU only)")
    p.add_argument("--no-check", action="store_true", help="skip the comparison of each export with PyTorch")
    p.add_argument("--project", default=None, help="save to project/name (default: the folder of --weights)")
    p.add_argument("--name", default=None, help="save to project/name (default: into project itself)")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and export; returns 0, or prints one ``ERROR:`` line and exits with code 1."""
    from utils.cli import user_errors

    opt = parse_opt(argv)
    with user_errors():
        run(weights=opt.weights, include=opt.include, imgsz=opt.imgsz, batch_size=opt.batch_size, device=opt.device,
            half=opt.half, int8=opt.int8, dynamic=opt.dynamic, simplify=opt.simplify, opset=opt.opset,
            check=not opt.no_check, data=opt.data, calib_images=opt.calib_images, project=opt.project,
            name=opt.name, exist_ok=opt.exist_ok, allow_data_scripts=opt.allow_data_scripts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
