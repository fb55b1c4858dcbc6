"""Validate a trained detector's mAP on a dataset, with YOLOv5's command line.

Usage:
    python val.py --weights runs/train/exp/weights/best.pt --data data/shapes.yaml --img 256
    python val.py --weights yolov5s-ema.pt --data coco.yaml --img 640 --iou-thres 0.65 --save-json   # paper setting
    python val.py --weights best.pt best.onnx best_openvino_model/ --data coco.yaml                   # several / exports
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils import offline  # noqa: E402,F401


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=str, default="data/shapes.yaml", help="dataset.yaml path")
    p.add_argument("--weights", nargs="+", type=str, default=[], help="model path(s): .pt, .torchscript, .onnx, openvino dir")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold (the paper reports at 0.65)")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per image")
    p.add_argument("--task", default="val", choices=["val", "test", "speed"], help="val, test or speed")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    p.add_argument("--single-cls", action="store_true", help="treat as single-class dataset")
    p.add_argument("--augment", action="store_true", help="augmented inference")
    p.add_argument("--verbose", action="store_true", help="report mAP by class")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-json", action="store_true", help="save a COCO-JSON results file (and score it with pycocotools)")
    p.add_argument("--project", default=str(ROOT / "runs" / "val"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    return p.parse_args(argv)


def load_for_validation(weights: str, device: str = ""):
    """A ``.pt`` (ours or an official YOLOv5 checkpoint) becomes our model; exported formats stay paths for the engine."""
    from utils.checkpoint import check_export_format, load_model

    if str(weights).endswith(".pt"):
        return load_model(weights, device="cpu", fuse=False)
    if not Path(weights).exists():
        raise FileNotFoundError(f"--weights {weights}: file or folder not found")
    return str(check_export_format(weights))


def check_options(imgsz: int, batch_size: int, conf_thres: float, iou_thres: float, max_det: int,
                  workers: int) -> None:
    """Numbers out of range fail here, before anything is loaded or written."""
    from utils.cli import check_image_size, check_number

    check_image_size("--imgsz", imgsz, max_values=1)
    check_number("--batch-size", batch_size, 1)
    check_number("--conf-thres", conf_thres, 0, 1)
    check_number("--iou-thres", iou_thres, 0, 1)
    check_number("--max-det", max_det, 1)
    check_number("--workers", workers, 0)


def run(data: str = "data/shapes.yaml", weights: str | list[str] = (), batch_size: int = 32, imgsz: int = 640,
        conf_thres: float = 0.001, iou_thres: float = 0.6, max_det: int = 300, task: str = "val", device: str = "",
        workers: int = 8, single_cls: bool = False, augment: bool = False, verbose: bool = False,
        save_txt: bool = False, save_conf: bool = False, save_json: bool = False, project: str | Path = ROOT / "runs" / "val",
        name: str = "exp", exist_ok: bool = False, half: bool = False, plots: bool = True,
        rect: bool = True) -> list[dict]:
    """Validate each of ``weights``; returns one metrics dict per model (``metrics/mAP50(B)``, ``metrics/mAP50-95(B)``...)."""
    check_options(imgsz, batch_size, conf_thres, iou_thres, max_det, workers)
    from utils.allocator import keep_freed_memory_on_cpu
    from utils.cli import no_empty_run_dir
    from utils.engine import YOLOv5Validator, all_cores, increment_dir, resolve_data

    keep_freed_memory_on_cpu(device)
    weights = [weights] if isinstance(weights, (str, Path)) else list(weights)
    if not weights:
        raise ValueError("--weights is required: a .pt checkpoint, or an exported .onnx/.torchscript/openvino model")
    if task == "speed":  # YOLOv5's speed benchmark settings
        conf_thres, iou_thres, save_json, plots = 0.25, 0.45, False, False
    results = []
    for w in weights:
        save_dir = increment_dir(Path(project).resolve() / name, exist_ok)
        args = {
            "task": "detect", "mode": "val", "data": resolve_data(data), "batch": batch_size, "imgsz": imgsz,
            "conf": conf_thres, "iou": iou_thres, "max_det": max_det, "split": "val" if task == "speed" else task,
            "device": device or None, "workers": workers, "single_cls": single_cls, "augment": augment,
            "verbose": verbose, "save_txt": save_txt, "save_conf": save_conf, "save_json": save_json,
            "save_dir": str(save_dir), "quantize": 16 if half else None, "plots": plots, "rect": rect,
        }
        with no_empty_run_dir(save_dir), all_cores():
            validator = YOLOv5Validator(args=args, save_dir=save_dir)
            stats = validator(model=load_for_validation(w, device))
        stats["speed"] = dict(validator.speed)
        results.append(stats)
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and validate; returns 0, or prints one ``ERROR:`` line and exits with code 1."""
    from utils.cli import user_errors

    opt = parse_opt(argv)
    with user_errors():
        run(data=opt.data, weights=opt.weights, batch_size=opt.batch_size, imgsz=opt.imgsz, conf_thres=opt.conf_thres,
            iou_thres=opt.iou_thres, max_det=opt.max_det, task=opt.task, device=opt.device, workers=opt.workers,
            single_cls=opt.single_cls, augment=opt.augment, verbose=opt.verbose, save_txt=opt.save_txt,
            save_conf=opt.save_conf, save_json=opt.save_json, project=opt.project, name=opt.name,
            exist_ok=opt.exist_ok, half=opt.half, plots=not opt.noplots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
