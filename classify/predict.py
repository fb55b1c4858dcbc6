"""Classify images, videos, folders, globs and streams with a trained classifier, with YOLOv5's command line.

Usage:
    python classify/predict.py --weights runs/train-cls/exp/weights/best.pt --source data/images
    python classify/predict.py --weights best.onnx --source img.jpg --imgsz 64 --save-txt
    python classify/predict.py --weights best_openvino_model/ --source 'path/*.png'

Each image's top-5 classes and probabilities are printed (``image 1/2 path: 64x64 circle 0.97, star 0.02, ...``) and
drawn on it; results go to runs/predict-cls/exp*/ (images/videos, labels/*.txt with --save-txt).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils import offline  # noqa: E402,F401


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=str, default="", help="model path: .pt, .onnx, openvino dir")
    p.add_argument("--source", type=str, default=str(ROOT / "data" / "images"), help="file/dir/URL/glob/stream")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=None,
                   help="inference size (pixels; default: the size the .pt was trained at, else 224)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--view-img", action="store_true", help="show results")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--nosave", action="store_true", help="do not save images/videos")
    p.add_argument("--project", default=str(ROOT / "runs" / "predict-cls"), help="save results to project/name")
    p.add_argument("--name", default="exp", help="save results to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference")
    p.add_argument("--vid-stride", type=int, default=1, help="video frame-rate stride")
    return p.parse_args(argv)


def safe_names(predictor_class: type) -> type:
    """The engine's predictor, writing the outputs of a file whose name is not valid UTF-8 (which OpenCV's writers
    crash on) under a safe name, logged once with the original, and reading such videos (utils/outputs.py)."""
    from ultralytics.utils import LOGGER

    from utils.outputs import OutputNames, video_safe

    class Predictor(predictor_class):
        def setup_source(self, source) -> None:
            import ultralytics.data.build as build

            files = build.LoadImagesAndVideos  # the loader the engine's load_inference_source builds
            build.LoadImagesAndVideos = video_safe(files)
            try:
                super().setup_source(source)
            finally:
                build.LoadImagesAndVideos = files

        def write_results(self, i: int, p: Path, im, s: list[str]) -> str:
            if not hasattr(self, "file_names"):
                self.file_names = OutputNames(LOGGER.info)
            p = Path(p)
            return super().write_results(i, p.with_name(self.file_names.stem(p) + p.suffix), im, s)

    return Predictor


def run(weights: str | Path = "", source: str | Path = ROOT / "data" / "images", imgsz: int | None = None,
        device: str = "", view_img: bool = False, save_txt: bool = False, nosave: bool = False,
        project: str | Path = ROOT / "runs" / "predict-cls", name: str = "exp", exist_ok: bool = False,
        half: bool = False, vid_stride: int = 1) -> list:
    """Classify every image/frame of ``source``; returns the engine's ``Results`` (``.probs.top5``, ``.save_dir``)."""
    from ultralytics.models.yolo.classify import ClassificationPredictor

    from utils.allocator import keep_freed_memory_on_cpu
    from utils.cli import check_device, check_image_size, no_empty_run_dir
    from utils.engine import all_cores, increment_dir
    from utils.engine_cls import load_classifier

    check_image_size("--imgsz", imgsz, max_values=1)
    check_device(device)
    if not weights:
        raise ValueError("--weights is required: a .pt checkpoint, or an exported .onnx/openvino classifier")
    if not (str(source).isnumeric() or "://" in str(source) or any(c in str(source) for c in "*?")
            or Path(source).exists()):
        raise FileNotFoundError(f"--source {source}: no such file or folder")
    keep_freed_memory_on_cpu(device)
    from utils.weights import resolve_weights

    weights = resolve_weights(weights)  # a URL or an official name is downloaded (utils/weights.py)
    model, trained_size = load_classifier(weights)
    save_dir = increment_dir(Path(project).resolve() / name, exist_ok)
    args = {"task": "classify", "mode": "predict", "imgsz": imgsz or trained_size or 224, "device": device or None,
            "show": view_img, "save": not nosave, "save_txt": save_txt, "half": half, "vid_stride": vid_stride,
            "project": str(save_dir.parent), "name": save_dir.name, "exist_ok": True, "verbose": True}
    with all_cores(), no_empty_run_dir(save_dir):
        predictor = safe_names(ClassificationPredictor)(overrides=args)
        return list(predictor(source=str(source), model=model, stream=True))


def main(argv: list[str] | None = None) -> int:
    from utils.cli import user_errors

    opt = parse_opt(sys.argv[1:] if argv is None else argv)
    with user_errors():
        run(**vars(opt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
