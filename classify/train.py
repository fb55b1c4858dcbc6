"""Train a classifier (YOLOv5-cls, ResNet, MobileNetV2, with any attention module) with YOLOv5's command line.

Usage:
    python classify/train.py                                    # short demo on the generated shapes-cls data
    python classify/train.py --model models/cls/resnet50-cifar100-ema.yaml --data cifar100 --hyp hyp.cifar100.yaml \\
        --img 32 --epochs 200 --batch-size 128                  # EMA paper, Table 1
    python classify/train.py --model models/cls/mobilenetv2-ema.yaml --data imagenet \\
        --hyp hyp.imagenet-mobilenetv2.yaml --img 224 --epochs 400 --batch-size 256   # Table 3
    python classify/train.py --model yolov5s.yaml --data path/to/folder --cutoff 10     # YOLOv5's cls from a detector

Datasets (--data): cifar10, cifar100 (downloaded and converted on first use), imagenet (converted from the official
archives placed in ../datasets/imagenet/), shapes-cls (generated), or a folder <root>/{train,val|test}/<class>/*.
Models (--model): a classification YAML (models/cls/*.yaml), a detection YAML (backbone up to --cutoff + YOLOv5's
Classify head), or a .pt checkpoint (a classifier to fine-tune, or a detector whose backbone is kept).
Results go to runs/train-cls/exp*/ (weights/last.pt, weights/best.pt, results.csv, confusion matrix, plots).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from utils import offline  # noqa: E402,F401

# Defaults of a run on the bundled data: small enough for a CPU.
DEMO = {"data": "shapes-cls", "model": "models/cls/cnn4-ema.yaml", "imgsz": 64, "epochs": 15, "batch": 32,
        "hyp": "data/hyps/hyp.shapes-cls.yaml"}


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=str, default=None,
                   help=f"model YAML or .pt weights (default {DEMO['model']} on the demo data, else yolov5s-cls.yaml)")
    p.add_argument("--data", type=str, default=DEMO["data"], help="cifar10, cifar100, imagenet, shapes-cls or a folder")
    p.add_argument("--hyp", type=str, default=None,
                   help=f"recipe file, e.g. hyp.cifar100.yaml (default: YOLOv5's classification defaults; "
                        f"{DEMO['hyp']} on the demo data)")
    p.add_argument("--epochs", type=int, default=None, help=f"training epochs (default 10; {DEMO['epochs']} demo)")
    p.add_argument("--batch-size", type=int, default=None, help=f"total batch size (default 64; {DEMO['batch']} demo)")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=None,
                   help=f"train, val image size (pixels; default 224, {DEMO['imgsz']} on the demo data)")
    p.add_argument("--nosave", action="store_true", help="only save final checkpoint")
    p.add_argument("--cache", type=str, nargs="?", const="ram", help='--cache images in "ram" (default) or "disk"')
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers")
    p.add_argument("--project", default=str(ROOT / "runs" / "train-cls"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--optimizer", choices=["SGD", "Adam", "AdamW", "RMSProp"], default=None,
                   help="optimizer (default: the recipe's; Adam without one)")
    p.add_argument("--lr0", type=float, default=None, help="initial learning rate (default: the recipe's; 0.001)")
    p.add_argument("--decay", type=float, default=None, help="weight decay (default: the recipe's; 5e-5)")
    p.add_argument("--label-smoothing", type=float, default=None, help="label smoothing epsilon (default: recipe; 0.1)")
    p.add_argument("--cutoff", type=int, default=None, help="detection model layer cutoff index for the Classify head")
    p.add_argument("--ksize", type=str, default=None,
                   help="ECA kernel size per stage of an ECA-Net YAML, one digit each as ECA-Net's --ksize (3557)")
    p.add_argument("--dropout", type=float, default=None, help="dropout (fraction)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="augment training images (RandomResizedCrop, flip, colour jitter: YOLOv5's albumentations "
                        "recipe) instead of resize + centre crop (default: the recipe's; off without one, as YOLOv5 "
                        "without albumentations)")
    p.add_argument("--patience", type=int, default=100, help="EarlyStopping patience (epochs without improvement)")
    p.add_argument("--verbose", action="store_true", help="per-class accuracy in the final validation")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--seed", type=int, default=0, help="global training seed")
    return p.parse_args(argv)


def is_demo(opt: argparse.Namespace) -> bool:
    return str(opt.data).lower() == DEMO["data"]


def engine_overrides(opt: argparse.Namespace) -> dict:
    """Translate YOLOv5 flags into the engine's arguments (flags given win over the recipe file)."""
    from utils.engine import increment_dir

    demo = is_demo(opt)
    out = {
        "model": opt.model or (DEMO["model"] if demo else "yolov5s-cls.yaml"),
        "data": opt.data,
        "save_dir": str(increment_dir(Path(opt.project).resolve() / opt.name, opt.exist_ok)),
        "epochs": opt.epochs or (DEMO["epochs"] if demo else 10),
        "batch": opt.batch_size or (DEMO["batch"] if demo else 64),
        "imgsz": opt.imgsz or (DEMO["imgsz"] if demo else 224),
        "save": not opt.nosave,  # YOLOv5's --nosave: checkpoints of the final epoch only
        "cache": opt.cache or False,
        "device": opt.device or None,
        "workers": opt.workers,
        "patience": opt.patience,
        "verbose": opt.verbose,
        "plots": not opt.noplots,
        "seed": opt.seed,
    }
    flags = {"optimizer": opt.optimizer, "lr0": opt.lr0, "weight_decay": opt.decay,
             "label_smoothing": opt.label_smoothing, "dropout": opt.dropout, "augment": opt.augment}
    out.update({k: v for k, v in flags.items() if v is not None})
    return out


def run(argv: list[str] | None = None, **kwargs):
    """Train; returns the trainer. Keyword arguments override parsed flags (``run(epochs=3, data=...)``)."""
    opt = parse_opt(argv or [])
    for k, v in kwargs.items():
        setattr(opt, k, v)
    from utils.allocator import keep_freed_memory_on_cpu
    from utils.cli import check_device, check_image_size, no_empty_run_dir
    from utils.engine import all_cores
    from utils.engine_cls import ClassifierTrainer

    check_image_size("--imgsz", opt.imgsz, max_values=1)
    if opt.ksize:
        from models.classify import parse_ksize

        parse_ksize(opt.ksize)  # a bad --ksize fails before any data is prepared
    check_device(opt.device)
    keep_freed_memory_on_cpu(opt.device)
    hyp = opt.hyp or (DEMO["hyp"] if is_demo(opt) else None)
    if opt.model:
        from utils.weights import resolve_weights

        opt.model = resolve_weights(opt.model)  # a .pt URL or an official name is downloaded (utils/weights.py)
    overrides = engine_overrides(opt)
    with all_cores(), no_empty_run_dir(overrides["save_dir"]):
        trainer = ClassifierTrainer(overrides=overrides, hyp=hyp, cutoff=opt.cutoff, ksize=opt.ksize)
        trainer.train()
    return trainer


def main(argv: list[str] | None = None) -> int:
    from utils.cli import user_errors

    with user_errors():
        run(sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
