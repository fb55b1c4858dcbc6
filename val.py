"""Validate a trained detector's mAP on a dataset, with YOLOv5's command line.

Usage:
    python val.py --weights runs/train/exp/weights/best.pt --data data/shapes.yaml --img 256
    python val.py --weights yolov5s-ema.pt --data coco.yaml --img 640 --iou-thres 0.65 --save-json   # paper setting
    python val.py --weights a.pt b.pt --data coco.yaml                     # an ensemble of two models (.pt only)
    python val.py --weights best.pt best.onnx --task speed                 # benchmark each model on its own
    python val.py --weights best.pt --data coco.yaml --task study          # mAP and speed at 256..1536 pixels
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=str, default="data/shapes.yaml", help="dataset.yaml path")
    p.add_argument("--weights", nargs="+", type=str, default=[],
                   help="model path(s): .pt, .torchscript, .onnx, openvino dir; several .pt: an ensemble")
    p.add_argument("--batch-size", type=int, default=32, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=640, help="inference size (pixels)")
    p.add_argument("--conf-thres", type=float, default=0.001, help="confidence threshold")
    p.add_argument("--iou-thres", type=float, default=0.6, help="NMS IoU threshold (the paper reports at 0.65)")
    p.add_argument("--max-det", type=int, default=300, help="maximum detections per image")
    p.add_argument("--task", default="val", choices=["val", "test", "speed", "study"],
                   help="val, test, speed (benchmark each --weights) or study (each at image sizes 256..1536)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    p.add_argument("--single-cls", action="store_true", help="treat as single-class dataset")
    p.add_argument("--augment", action="store_true", help="augmented inference")
    p.add_argument("--verbose", action="store_true", help="report mAP by class")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-hybrid", action="store_true", help="save label+prediction hybrid results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-json", action="store_true",
                   help="save a COCO-JSON results file (and score it with pycocotools)")
    p.add_argument("--project", default=str(ROOT / "runs" / "val"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--dnn", action="store_true", help="OpenCV DNN for ONNX inference (not used, see the line printed)")
    p.add_argument("--allow-data-scripts", action="store_true",
                   help="let the --data YAML's download: script (Python or bash) run; without it only URLs and this "
                        "project's preparers are used")
    return p.parse_args(argv)


def run(**options) -> list[dict]:
    """Validate ``weights`` (several .pt: one ensemble; options: those of ``utils.validation.validate``); one
    metrics dict per validation."""
    from utils.validation import validate

    return validate(**options)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and validate; returns 0, or prints one ``ERROR:`` line and exits with code 1."""
    from utils.cli import user_errors

    opt = parse_opt(argv)
    if opt.dnn:
        from utils.cli import DNN_NOTE

        print(DNN_NOTE, file=sys.stderr)
    with user_errors():
        run(data=opt.data, weights=opt.weights, batch_size=opt.batch_size, imgsz=opt.imgsz, conf_thres=opt.conf_thres,
            iou_thres=opt.iou_thres, max_det=opt.max_det, task=opt.task, device=opt.device, workers=opt.workers,
            single_cls=opt.single_cls, augment=opt.augment, verbose=opt.verbose, save_txt=opt.save_txt,
            save_hybrid=opt.save_hybrid, save_conf=opt.save_conf, save_json=opt.save_json, project=opt.project,
            name=opt.name, exist_ok=opt.exist_ok, half=opt.half, plots=not opt.noplots,
            allow_data_scripts=opt.allow_data_scripts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
