"""Train a YOLOv5 (+ attention) detector on a dataset, with YOLOv5's command line.

Usage:
    python train.py                                            # short demo run on the bundled shapes dataset
    python train.py --data coco.yaml --cfg models/yolov5s-ema.yaml --weights '' --batch-size 64 --epochs 300
    python train.py --data VisDrone.yaml --cfg models/yolov5x-p2-ema.yaml --weights yolov5x.pt \\
        --hyp data/hyps/hyp.VisDrone.yaml --batch-size 5
    python train.py --resume                                   # continue the latest interrupted run
    python train.py --device 0,1 ...                           # one process per GPU (DDP)
    python -m torch.distributed.run --nproc_per_node 2 train.py --device 0,1 ...   # the same, launched by hand
    python train.py --evolve 300                               # evolve hyperparameters (--ray: on Ray Tune)
    python train.py --image-weights --quad ...                 # class-weighted image sampling; quad batches
Results go to runs/train/exp*/ (weights/last.pt, weights/best.pt, results.csv, plots); evolution to runs/evolve/exp*/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent

# Defaults of a run with no arguments: the bundled demo data, small enough for a CPU.
DEMO = {"data": "data/shapes.yaml", "cfg": "models/yolov5n.yaml", "imgsz": 192, "epochs": 15, "optimizer": "AdamW",
        "hyp": "data/hyps/hyp.shapes.yaml"}


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=str, default="", help="initial weights path ('' = from scratch)")
    p.add_argument("--cfg", type=str, default="", help="model.yaml path (default: the demo model, or the weights' own)")
    p.add_argument("--data", type=str, default=DEMO["data"], help="dataset.yaml path")
    p.add_argument("--hyp", type=str, default=None,
                   help="hyperparameters path (default data/hyps/hyp.scratch-low.yaml; "
                        f"{DEMO['hyp']} on the demo data)")
    p.add_argument("--epochs", type=int, default=None, help=f"epochs (default 300; {DEMO['epochs']} on the demo data)")
    p.add_argument("--batch-size", type=int, default=16, help="total batch size for all GPUs, -1 for autobatch")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, default=None,
                   help=f"train, val image size (pixels; default 640, {DEMO['imgsz']} on the demo data)")
    p.add_argument("--rect", action="store_true", help="rectangular training")
    p.add_argument("--resume", nargs="?", const=True, default=False, help="resume most recent training, or a last.pt")
    p.add_argument("--nosave", action="store_true", help="only save final checkpoint")
    p.add_argument("--noval", action="store_true", help="only validate final epoch")
    p.add_argument("--noautoanchor", action="store_true", help="disable AutoAnchor")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--evolve", type=int, nargs="?", const=300, help="evolve hyperparameters for x generations")
    p.add_argument("--ray", action="store_true", help="--evolve on Ray Tune (pip install -r requirements-ray.txt)")
    p.add_argument("--image-weights", action="store_true", help="use weighted image selection for training")
    p.add_argument("--cache", type=str, nargs="?", const="ram", help="--cache images in 'ram' (default) or 'disk'")
    p.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--multi-scale", action="store_true", help="vary img-size +/- 50%%")
    p.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    p.add_argument("--optimizer", type=str, choices=["SGD", "Adam", "AdamW"], default=None,
                   help=f"optimizer (default SGD; {DEMO['optimizer']} on the demo data)")
    p.add_argument("--sync-bn", action="store_true", help="use SyncBatchNorm, only available in DDP mode")
    p.add_argument("--workers", type=int, default=8, help="max dataloader workers (per RANK in DDP mode)")
    p.add_argument("--project", default=str(ROOT / "runs" / "train"), help="save to project/name")
    p.add_argument("--quad", action="store_true", help="quad dataloader (4 images form one of twice the size)")
    p.add_argument("--name", default="exp", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--cos-lr", action="store_true", help="cosine LR scheduler")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="label smoothing epsilon")
    p.add_argument("--patience", type=int, default=100, help="EarlyStopping patience (epochs without improvement)")
    p.add_argument("--freeze", nargs="+", type=int, default=[0], help="freeze layers: backbone=10, first3=0 1 2")
    p.add_argument("--save-period", type=int, default=-1, help="save checkpoint every x epochs (disabled if < 1)")
    p.add_argument("--seed", type=int, default=0, help="global training seed")
    p.add_argument("--local_rank", "--local-rank", type=int, default=-1,
                   help="automatic DDP argument of torch.distributed.launch (sets LOCAL_RANK), do not modify")
    # YOLOv5's Weights & Biases options: accepted, with one line saying what is done with them (utils/train_options.py)
    p.add_argument("--entity", default=None, help="W&B entity (not used, see the line printed)")
    p.add_argument("--upload_dataset", nargs="?", const=True, default=False,
                   help='W&B: upload data, "val" option (not used, see the line printed)')
    p.add_argument("--bbox_interval", type=int, default=-1,
                   help="W&B bounding-box image logging interval (not used, see the line printed)")
    p.add_argument("--artifact_alias", type=str, default="latest",
                   help="W&B dataset artifact version (not used, see the line printed)")
    p.add_argument("--ndjson-console", action="store_true", help="log each epoch's metrics as a JSON line")
    p.add_argument("--ndjson-file", action="store_true", help="append each epoch's metrics to results.ndjson")
    # YOLOv5 v7.0's options of its population-based evolution and of its cloud storage: accepted, one line each
    p.add_argument("--evolve_population", type=str, default=None,
                   help="folder of YOLOv5's population-based evolution (not used, see the line printed)")
    p.add_argument("--resume_evolve", type=str, default=None,
                   help="YOLOv5's evolution population file to resume from (not used, see the line printed)")
    p.add_argument("--bucket", type=str, default="", help="gsutil bucket for --evolve (not used, see the line printed)")
    p.add_argument("--allow-data-scripts", action="store_true",
                   help="let the --data YAML's download: script (Python or bash) run; without it only URLs and this "
                        "project's preparers are used")
    p.add_argument("--attention", default="", metavar="NAME[@i,j]",
                   help="insert an attention module after Table 2's sites (the P4 and P5 backbone C3s) or after "
                        "layers i, j of the model YAML; the YAML written goes to --project")
    return p.parse_args(argv)


def is_demo(opt: argparse.Namespace) -> bool:
    """The bundled shapes data gets a short CPU-sized schedule unless flags say otherwise."""
    return Path(opt.data).name == Path(DEMO["data"]).name


def hyp_path(opt: argparse.Namespace) -> str:
    return opt.hyp or (DEMO["hyp"] if is_demo(opt) else "data/hyps/hyp.scratch-low.yaml")


def engine_overrides(opt: argparse.Namespace, cfg: str) -> dict:
    """Translate YOLOv5 flags into the engine's arguments."""
    from utils.datayaml import prepare_data
    from utils.engine import increment_dir, resolve_data

    demo = is_demo(opt)
    data = prepare_data(resolve_data(opt.data), allow_scripts=opt.allow_data_scripts, labels=("train", "val"))
    freeze = opt.freeze[0] if len(opt.freeze) == 1 else list(opt.freeze)
    overrides = {
        "model": cfg,
        "data": data,
        "epochs": opt.epochs or (DEMO["epochs"] if demo else 300),
        "batch": opt.batch_size,
        "imgsz": opt.imgsz or (DEMO["imgsz"] if demo else 640),
        "rect": opt.rect,
        "save": not opt.nosave,
        "val": not opt.noval,
        "plots": not opt.noplots,
        "cache": opt.cache or False,
        "device": opt.device or None,
        "multi_scale": 0.5 if opt.multi_scale else 0.0,
        "single_cls": opt.single_cls,
        "optimizer": opt.optimizer or (DEMO["optimizer"] if demo else "SGD"),
        "workers": opt.workers,
        "cos_lr": opt.cos_lr,
        "patience": opt.patience,
        "freeze": freeze or None,
        "save_period": opt.save_period,
        "seed": opt.seed,
    }
    if opt.evolve is None:  # claimed last (created and locked: utils/rundir.py); --evolve gets its folder in evolve()
        overrides["save_dir"] = str(increment_dir(Path(opt.project).resolve() / opt.name, opt.exist_ok))
    return overrides


def check_options(opt: argparse.Namespace) -> None:
    """Numbers out of range fail here, before anything is loaded or written."""
    from utils.cli import check_device, check_image_size, check_number
    from utils.engine import device_count, launched_world_size

    check_image_size("--imgsz", opt.imgsz, max_values=1)
    check_device(opt.device)
    check_number("--epochs", opt.epochs, 1)
    check_number("--batch-size", opt.batch_size, 1, also={-1: "autobatch"})
    check_number("--workers", opt.workers, 0)
    check_number("--patience", opt.patience, 0)
    check_number("--label-smoothing", opt.label_smoothing, 0, 1)
    for layers in opt.freeze:
        check_number("--freeze", layers, 0)
    if opt.image_weights and (device_count(opt.device) > 1 or launched_world_size() > 1):
        raise ValueError("--image-weights argument is not compatible with DDP training")  # as in YOLOv5


def resume_overrides(opt: argparse.Namespace) -> dict:
    """Engine arguments that continue an interrupted run, once its checkpoint (loaded safely) proves resumable."""
    from utils.checkpoint import check_resumable
    from utils.engine import latest_run

    last = latest_run(opt.project) if opt.resume is True else Path(opt.resume)
    if not last.is_file():
        raise FileNotFoundError(f"--resume: checkpoint {last} not found")
    check_resumable(last)
    overrides = {"resume": str(last), "model": str(last)}
    if last.parent.name == "weights":  # continue in the run's folder, wherever it is now, if no live run uses it
        from utils.rundir import lock_run_dir

        overrides["save_dir"] = str(last.parent.parent.resolve())
        lock_run_dir(overrides["save_dir"], what=f"--resume {last}",
                     hint="that run is still training; wait for it to end before resuming")
    return overrides


def run(**options):
    """Train; returns the trainer (with --evolve: the evolution folder). ``options`` are the flags' names
    (``run(data="coco.yaml", epochs=3)``), the others default as on the command line."""
    opt = parse_opt([])
    unknown = sorted(set(options) - set(vars(opt)))
    if unknown:
        raise TypeError(f"run() got unknown option(s): {', '.join(unknown)}")
    vars(opt).update(options)
    check_options(opt)
    from models.yolo import resolve_cfg
    from utils.allocator import keep_freed_memory_on_cpu
    from utils.cli import no_empty_run_dir
    from utils.engine import YOLOv5Trainer, all_cores, cfg_of_weights, load_hyp

    keep_freed_memory_on_cpu(opt.device)

    if opt.evolve is not None or opt.ray:  # hyperparameter evolution (utils/evolve.py): checked before --resume
        from utils.evolve import check_evolve_opt

        check_evolve_opt(opt)
    if opt.resume:
        setup = {"overrides": resume_overrides(opt), "hyp": load_hyp(hyp_path(opt))}
    else:
        from utils.weights import resolve_weights

        opt.weights = resolve_weights(opt.weights)  # a URL or an official name is downloaded (utils/weights.py)
        hyp = load_hyp(hyp_path(opt))
        hyp["label_smoothing"] = opt.label_smoothing
        if opt.cfg:
            cfg = str(resolve_cfg(opt.cfg))
        elif opt.weights:
            cfg = cfg_of_weights(opt.weights, Path(opt.project))  # fine-tune the architecture stored in the weights
        else:
            cfg = str(resolve_cfg(DEMO["cfg"]))
        if opt.attention:  # the YAML with the attention layers inserted (models/insert.py)
            from models.insert import write_attention_cfg

            cfg = str(write_attention_cfg(cfg, opt.attention, Path(opt.project)))
        setup = {"overrides": engine_overrides(opt, cfg), "hyp": hyp, "weights": opt.weights or None,
                 "autoanchor": not opt.noautoanchor, "sync_bn": opt.sync_bn}
    if opt.evolve is not None:  # many short trainings instead of one; returns the evolution folder
        from ultralytics.utils import LOGGER

        from utils.evolve import evolve
        from utils.train_options import unused_evolve_note

        if opt.image_weights or opt.quad:
            LOGGER.warning("--image-weights/--quad: not applied to the trainings of --evolve")
        if unused_evolve_note(opt):
            LOGGER.info(unused_evolve_note(opt))

        return evolve(opt, setup)
    with all_cores(), no_empty_run_dir(setup["overrides"].get("save_dir")):
        trainer = YOLOv5Trainer(**setup)
        add_batch_options(trainer, opt)
        trainer.train()
    return trainer


def add_batch_options(trainer, opt: argparse.Namespace) -> None:
    """--image-weights, --quad (utils/train_options.py) on the trainer; the W&B options' line."""
    from ultralytics.utils import LOGGER

    from utils.train_options import unused_evolve_note, use_image_weights, use_quad, wandb_note

    if opt.image_weights:
        use_image_weights(trainer)
    if opt.quad:
        use_quad(trainer)
    trainer.ndjson_console, trainer.ndjson_file = opt.ndjson_console, opt.ndjson_file
    for note in (wandb_note(opt), unused_evolve_note(opt)):
        if note:
            LOGGER.info(note)


def local_rank_to_env(opt: argparse.Namespace) -> None:
    """``--local-rank N`` (passed by ``python -m torch.distributed.launch``) becomes ``LOCAL_RANK``, which the engine
    reads, unless the launcher set it already; done before the engine is imported."""
    import os

    if opt.local_rank != -1 and "LOCAL_RANK" not in os.environ:
        os.environ["LOCAL_RANK"] = str(opt.local_rank)


def launch_ddp(argv: list[str], nproc: int) -> int:
    """``--device 0,1,...`` in a plain process: run this script once per device under ``torch.distributed.run``.

    The same path as a user's own ``python -m torch.distributed.run --nproc_per_node N train.py ...`` (and the one
    the tests exercise with gloo on the CPU): every process parses the same flags, rank 0 writes the run.
    """
    import subprocess

    from ultralytics.utils.dist import find_free_network_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_port", str(find_free_network_port()), str(Path(__file__).resolve()), *argv]
    print(f"DDP: {' '.join(cmd)}", file=sys.stderr)
    return subprocess.run(cmd).returncode


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and train; returns 0, or prints one ``ERROR:`` line and exits with code 1."""
    import os

    argv = sys.argv[1:] if argv is None else argv
    opt = parse_opt(argv)
    local_rank_to_env(opt)
    from utils.cli import user_errors
    from utils.engine import device_count

    with user_errors():
        if device_count(opt.device) > 1 and "LOCAL_RANK" not in os.environ:
            if opt.evolve is not None or opt.ray:
                from utils.evolve import check_evolve_opt

                check_evolve_opt(opt)  # refuses several devices with YOLOv5's message
            check_options(opt)  # before the processes start (--device 0,1 on a machine without them)
            if not opt.resume:
                from utils.weights import resolve_weights

                resolve_weights(opt.weights)  # downloaded once, here, not by every process
            return launch_ddp(argv, device_count(opt.device))
        run(**vars(opt))
    return 0


if __name__ == "__main__":
    sys.exit(main())
