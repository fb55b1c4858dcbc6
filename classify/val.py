"""Validate a trained classifier's top-1/top-5 accuracy on a dataset, with YOLOv5's command line.

Usage:
    python classify/val.py --weights runs/train-cls/exp/weights/best.pt --data shapes-cls --img 64
    python classify/val.py --weights best.pt --data cifar100 --img 32 --verbose     # per-class rows
    python classify/val.py --weights best.pt best.onnx best_openvino_model/ --data cifar100 --img 32   # exports too

Prints YOLOv5's table (``Class Images top1_acc top5_acc``: ``all`` and, with --verbose, one row per class) and saves
the confusion matrix to runs/val-cls/exp*/. --data takes the names and folders classify/train.py takes; the split is
``val``, or ``test`` where the dataset has no ``val`` (CIFAR).
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
    p.add_argument("--data", type=str, default="shapes-cls", help="cifar10, cifar100, imagenet, shapes-cls or a folder")
    p.add_argument("--weights", nargs="+", type=str, default=[], help="model path(s): .pt, .onnx, openvino dir")
    p.add_argument("--batch-size", type=int, default=128, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=None,
                   help="inference size (pixels; default: the size the .pt was trained at, else 224)")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    p.add_argument("--verbose", action="store_true", help="report accuracy by class")
    p.add_argument("--project", default=str(ROOT / "runs" / "val-cls"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="use FP16 half-precision inference")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    return p.parse_args(argv)


def run(data: str = "shapes-cls", weights: str | list[str] = (), batch_size: int = 128, imgsz: int | None = None,
        device: str = "", workers: int = 8, verbose: bool = False, project: str | Path = ROOT / "runs" / "val-cls",
        name: str = "exp", exist_ok: bool = False, half: bool = False, plots: bool = True) -> list[dict]:
    """Validate each of ``weights``; returns one metrics dict per model (``metrics/accuracy_top1``, ``..._top5``)."""
    from utils.allocator import keep_freed_memory_on_cpu
    from utils.cli import check_device, check_image_size, no_empty_run_dir
    from utils.clsdata import resolve_cls_data
    from utils.engine import all_cores, increment_dir
    from utils.engine_cls import ClassifierValidator, load_classifier

    check_image_size("--imgsz", imgsz, max_values=1)
    check_device(device)
    keep_freed_memory_on_cpu(device)
    weights = [weights] if isinstance(weights, (str, Path)) else list(weights)
    if not weights:
        raise ValueError("--weights is required: a .pt checkpoint, or an exported .onnx/openvino classifier")
    from utils.weights import resolve_weights

    weights = [resolve_weights(w) for w in weights]  # URLs and official names are downloaded (utils/weights.py)
    if missing := [str(w) for w in weights if not Path(w).exists()]:
        raise FileNotFoundError(f"--weights {', '.join(missing)}: file or folder not found")
    folder = str(resolve_cls_data(data))
    results = []
    for w in weights:
        model, trained_size = load_classifier(w)
        save_dir = increment_dir(Path(project).resolve() / name, exist_ok)
        args = {"task": "classify", "mode": "val", "data": folder, "batch": batch_size,
                "imgsz": imgsz or trained_size or 224, "device": device or None, "workers": workers, "verbose": verbose,
                "save_dir": str(save_dir), "quantize": 16 if half else None, "plots": plots, "split": "val"}
        with all_cores(), no_empty_run_dir(save_dir):
            validator = ClassifierValidator(args=args, save_dir=save_dir)
            stats = validator(model=model)
        stats["speed"] = dict(validator.speed)
        results.append(stats)
    return results


def main(argv: list[str] | None = None) -> int:
    from utils.cli import user_errors

    opt = parse_opt(sys.argv[1:] if argv is None else argv)
    with user_errors():
        run(data=opt.data, weights=opt.weights, batch_size=opt.batch_size, imgsz=opt.imgsz, device=opt.device,
            workers=opt.workers, verbose=opt.verbose, project=opt.project, name=opt.name, exist_ok=opt.exist_ok,
            half=opt.half, plots=not opt.noplots)
    return 0


if __name__ == "__main__":
    sys.exit(main())
