"""Attention study: train a baseline and attention modules on it over several seeds, and print the paper's table.

Usage:
    python study.py                                         # yolov5n vs EMA, CA, CBAM, SA, ECA on the demo data
    python study.py --data coco.yaml --cfg models/yolov5s.yaml --attention EMA CA CBAM SA ECA --seeds 0 1 2 \\
        --epochs 300 --batch-size 64                                 # Table 2 (COCO), the paper's numbers beside
    python study.py --cfg models/yolov5s.yaml models/yolov5s-ema.yaml --attention EMA@6,8 ...   # YAMLs, other sites
    python study.py ... --device 0,1,2,3                             # one run per GPU at once
    python study.py ... --ray                                        # each run a Ray task with one GPU
    python study.py ...                                              # the same command again: continues the study

Each run is an ordinary ``train.py`` run in ``runs/study/exp*/<model>-s<seed>/`` (log: ``<model>-s<seed>.log``);
the table goes to the screen and to ``study.md``, ``study.csv``, ``study.png`` (mAP against latency and GFLOPs) and
``curves.png`` (every run's training curves). ``study.yaml`` records the settings; see ``utils/study.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
DEMO_DATA = "data/shapes.yaml"  # train.py's demo defaults on the bundled data: 15 epochs at 192 px, its own hyp file


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cfg", nargs="+", default=["models/yolov5n.yaml"],
                   help="the baseline model YAML, then any further models to compare (YAMLs)")
    p.add_argument("--attention", nargs="*", default=None, metavar="NAME[@i,j]",
                   help="attention modules inserted into the baseline as train.py --attention does (Table 2's sites, "
                        "or after layers i, j); default EMA CA CBAM SA ECA, none with several --cfg")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds of every model")
    p.add_argument("--data", default=DEMO_DATA, help="dataset.yaml path")
    p.add_argument("--hyp", default=None, help="hyperparameters path (default: train.py's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 300; 15 on the demo data)")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=None,
                   help="train, val and latency image size (default 640; 192 on the demo data)")
    p.add_argument("--batch-size", type=int, default=16, help="batch size of each run")
    p.add_argument("--optimizer", choices=["SGD", "Adam", "AdamW"], default=None, help="optimizer (train.py's default)")
    p.add_argument("--weights", default=None, help="initial weights of every run (default: from scratch)")
    p.add_argument("--workers", type=int, default=8, help="dataloader workers of each run")
    p.add_argument("--device", default="", help="cuda device(s): 0 or 0,1,2,3 (one run per device at once) or cpu")
    p.add_argument("--ray", action="store_true", help="run each training as a Ray task with one GPU "
                   "(pip install -r requirements-ray.txt)")
    p.add_argument("--latency-budget", type=float, default=20.0, help="seconds of timed latency runs per device")
    p.add_argument("--project", default=str(ROOT / "runs" / "study"), help="save to project/name")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="use project/name itself (new, or with the same settings)")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                   help="further train.py flags for every run, e.g. --train-args --cos-lr --noautoanchor (last)")
    return p.parse_args(argv)


def settings_of(opt: argparse.Namespace) -> dict:
    """What the study measures (``study.yaml``): continuing it needs the same models, seeds and recipe."""
    from models.yolo import resolve_cfg
    from utils.engine import resolve_data

    demo = Path(opt.data).name == Path(DEMO_DATA).name
    attention = opt.attention if opt.attention is not None else ([] if len(opt.cfg) > 1 else
                                                                 ["EMA", "CA", "CBAM", "SA", "ECA"])
    recipe = {"data": resolve_data(opt.data), "hyp": opt.hyp, "epochs": opt.epochs or (15 if demo else 300),
              "imgsz": opt.imgsz or (192 if demo else 640), "batch_size": opt.batch_size, "optimizer": opt.optimizer,
              "weights": opt.weights, "extra": list(opt.train_args)}
    return {"cfgs": [str(resolve_cfg(c).resolve()) for c in opt.cfg], "attention": list(attention),
            "seeds": list(opt.seeds), "recipe": recipe, "workers": opt.workers}


def run(opt: argparse.Namespace, **kwargs) -> Path:
    from utils.cli import check_device, check_image_size, check_number
    from utils.study import StudyError, run_study

    check_image_size("--imgsz", opt.imgsz, max_values=1)
    check_device(opt.device)
    check_number("--epochs", opt.epochs, 1)
    check_number("--batch-size", opt.batch_size, 1)
    check_number("--workers", opt.workers, 0)
    if len(set(opt.seeds)) != len(opt.seeds):
        raise StudyError("--seeds: each seed once, e.g. --seeds 0 1 2")
    return run_study(settings_of(opt), Path(opt.project), opt.name, opt.exist_ok, opt.device, opt.ray,
                     latency_budget=opt.latency_budget, **kwargs)


def main(argv: list[str] | None = None) -> int:
    from utils import offline
    from utils.cli import user_errors

    offline.configure()
    opt = parse_opt(sys.argv[1:] if argv is None else argv)
    with user_errors():
        run(opt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
