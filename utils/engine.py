"""Glue between our YOLOv5 model, loss and anchors and the Ultralytics engine (pinned: ultralytics==8.4.190).

Everything that depends on the engine's internals lives here, so a version bump is one file to check:
- ``YOLOv5Trainer``: Ultralytics' ``DetectionTrainer`` with our ``Model`` and ``ComputeLoss``, YOLOv5 v6.0 defaults
  (SGD, 3 parameter groups, linear LR, warmup of max(3 epochs, 100 iterations), no mosaic closing), AutoAnchor before
  training, and checkpoints written atomically.
- ``YOLOv5Validator``: Ultralytics' ``DetectionValidator`` with official COCO mAP from ``pycocotools`` (offline).
- hyperparameter files in YOLOv5's format split into what the engine takes and what our loss takes.
"""

from __future__ import annotations

import contextlib
import os
from copy import copy, deepcopy
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import yaml
from ultralytics.models.yolo.detect import DetectionTrainer, DetectionValidator
from ultralytics.utils import LOGGER, RANK, torch_utils
from ultralytics.utils.torch_utils import unwrap_model

from models.yolo import Model
from utils import offline
from utils.results import ResultsLog

ROOT = Path(__file__).resolve().parents[1]
offline.configure()

# YOLOv5 hyperparameters the engine understands under the same name and meaning.
ENGINE_HYP_KEYS = (
    "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
    "hsv_h", "hsv_s", "hsv_v", "degrees", "translate", "scale", "shear", "perspective", "flipud", "fliplr",
    "mosaic", "mixup", "copy_paste",
    "nbs",  # nominal batch size (YOLOv5 fixes it at 64); short recipes may lower it
)
# YOLOv5 loss hyperparameters: they go to our ComputeLoss through ``model.hyp``, never to the engine (where 'box',
# 'cls' and 'cls_pw' exist with other meanings and scales).
LOSS_HYP_KEYS = ("box", "cls", "cls_pw", "obj", "obj_pw", "iou_t", "anchor_t", "fl_gamma", "label_smoothing")

# Engine settings that reproduce YOLOv5 v6.0 rather than the engine's own defaults.
YOLOV5_ENGINE_DEFAULTS: dict[str, Any] = {
    "task": "detect",
    "mode": "train",
    "optimizer": "SGD",
    "close_mosaic": 0,  # mosaic on every epoch
    "cls_pw": 0.0,  # the engine's class-frequency weighting: off (YOLOv5's cls_pw is a BCE pos_weight, in model.hyp)
    "nbs": 64,
    "iou": 0.6,  # NMS IoU of validation during training
    "conf": 0.001,
    "max_det": 300,
    "name": "exp",
    "patience": 100,
    "seed": 0,
    "deterministic": True,
}
DEFAULT_HYP_FILE = ROOT / "data" / "hyps" / "hyp.scratch-low.yaml"
# Keys every hyp file must name, as YOLOv5's do (a missing one would silently take the engine's default, which is not
# YOLOv5's); optional: nbs (64 as in YOLOv5) and label_smoothing (train.py's --label-smoothing).
REQUIRED_HYP_KEYS = tuple(k for k in ENGINE_HYP_KEYS + LOSS_HYP_KEYS if k not in ("nbs", "label_smoothing"))


TORCH_THREADS = torch.get_num_threads()  # torch's default, one per core, before the engine lowers it


@contextlib.contextmanager
def all_cores() -> Any:
    """Within the block the engine's ``select_device`` keeps torch's default thread count (one per core) on CPU.

    The engine sets ``cpu_count - 1`` threads to leave a core to data loading; YOLOv5 keeps torch's default, and on
    this project's 2-core machines that is faster for everything: val.py inference 141 -> 83 ms per 640 image, the
    README's demo training 30% less time (measured with the data loaders running).
    """
    saved = torch_utils.NUM_THREADS
    torch_utils.NUM_THREADS = TORCH_THREADS
    try:
        yield
    finally:
        torch_utils.NUM_THREADS = saved


def select_device(device: str | torch.device = "") -> torch.device:
    """The engine's ``select_device`` (quiet) without its side effect on CPU: it leaves torch's thread count as it is
    (see ``all_cores``). A CUDA device that is not there is an ``ArgumentError`` naming ``--device``, the value given
    and what to do (``utils.cli.check_device``), not the engine's ``Invalid CUDA 'device=0'``."""
    from utils.cli import check_device

    if not isinstance(device, torch.device):
        check_device(device)
    threads = torch.get_num_threads()
    try:
        return torch_utils.select_device(device, verbose=False)
    finally:
        torch.set_num_threads(threads)


class HypError(ValueError):
    """A hyperparameter file that cannot be used; the message names the file and the key."""


def load_hyp(path: str | Path | dict | None = None) -> dict[str, float]:
    """Read a YOLOv5 hyperparameter YAML (or dict) and check every key before training starts: no unknown key, numbers
    only, and (a file) every key of ``REQUIRED_HYP_KEYS``."""
    if isinstance(path, dict):
        hyp, where = dict(path), "hyp"
    else:
        file = find_file(path or DEFAULT_HYP_FILE, ROOT / "data" / "hyps")
        where = str(file)
        with open(file, encoding="utf-8") as f:
            hyp = yaml.safe_load(f) or {}
        if not isinstance(hyp, dict):
            raise HypError(f"{where}: expected a mapping of hyperparameter names to numbers")
    unknown = sorted(set(hyp) - set(ENGINE_HYP_KEYS) - set(LOSS_HYP_KEYS))
    if unknown:
        raise HypError(f"{where}: unknown hyperparameter(s) {', '.join(unknown)}; "
                       f"known keys: {', '.join(ENGINE_HYP_KEYS + LOSS_HYP_KEYS)}")
    for k, v in hyp.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise HypError(f"{where}: '{k}' must be a number, got {v!r}")
    missing = [k for k in REQUIRED_HYP_KEYS if k not in hyp]
    if missing and not isinstance(path, dict):  # a file; a dict from code is the caller's whole recipe
        raise HypError(f"{where}: missing hyperparameter(s) {', '.join(missing)}; a YOLOv5 hyp file names every key: "
                       f"add them (e.g. from {DEFAULT_HYP_FILE.relative_to(ROOT)})")
    return {k: float(v) for k, v in hyp.items()}


def split_hyp(hyp: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """Split YOLOv5 hyperparameters into (engine overrides, loss hyperparameters)."""
    engine = {k: v for k, v in hyp.items() if k in ENGINE_HYP_KEYS}
    loss = {k: v for k, v in hyp.items() if k in LOSS_HYP_KEYS}
    return engine, loss


def find_file(name: str | Path, *folders: Path) -> Path:
    """A file given by path, or by bare name inside one of ``folders``; FileNotFoundError naming where it looked."""
    p = Path(name)
    for candidate in (p, *(f / p for f in folders), *(f / p.name for f in folders)):
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"'{name}' not found (looked in the working directory and {', '.join(map(str, folders))})")


def resolve_data(data: str | Path) -> str:
    """Absolute path of a data YAML given by path or by name (``coco.yaml`` means this repo's ``data/coco.yaml``)."""
    return str(find_file(data, ROOT / "data"))


def _point_datasets_dir_at_repo() -> None:
    """Relative dataset paths (``path: ../datasets/coco``) resolve against this repository, as in YOLOv5."""
    import ultralytics.data.utils as data_utils

    data_utils.DATASETS_DIR = ROOT


_point_datasets_dir_at_repo()


def _load_checkpoints_safely() -> None:
    """Every checkpoint the engine opens goes through ``utils.checkpoint``'s restricted unpickler, never full pickle.

    The engine unpickles checkpoints in two functions: ``torch_safe_load`` (under its ``load_checkpoint``: resume, NaN
    recovery, ``AutoBackend`` on a ``.pt`` path) and ``torch_load`` in ``strip_optimizer`` (best.pt and last.pt after
    training). Both are replaced once, here, when this module is imported; DDP workers import it as they unpickle the
    trainer class, before their trainer opens any checkpoint.
    """
    import ultralytics.nn.tasks as tasks
    from ultralytics.utils import torch_utils

    from utils.checkpoint import load_for_engine

    def torch_safe_load(weight, *args, **kwargs) -> tuple[dict, str]:
        return load_for_engine(weight), str(weight)

    tasks.torch_safe_load = torch_safe_load
    torch_utils.torch_load = load_for_engine


_load_checkpoints_safely()


def _read_every_export_layout() -> None:
    """The engine's validator and predictor build their ``AutoBackend`` themselves (``val.py`` hands the validator an
    export's path): they get ``utils.backend.DetectorBackend``, the ``AutoBackend`` that reads YOLOv5's export layout
    ``(batch, anchors, 5 + nc)`` (ours and the original YOLOv5's) as well as the older ``(batch, 4 + nc, anchors)``.
    ``.pt`` models and classifiers pass through it unchanged. Replaced once, here, when this module is imported."""
    import ultralytics.engine.predictor as engine_predictor
    import ultralytics.engine.validator as engine_validator

    from utils.backend import DetectorBackend

    engine_validator.AutoBackend = engine_predictor.AutoBackend = DetectorBackend


_read_every_export_layout()


def image_problem(path: str | Path) -> str | None:
    """What is wrong with an image file ('empty file', 'not an image', 'truncated'...), or None when it reads."""
    from PIL import Image, UnidentifiedImageError

    from utils.checkpoint import describe_file

    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    try:
        with Image.open(p) as im:
            kind = im.format
            im.verify()
        if kind == "JPEG":
            with open(p, "rb") as f:
                f.seek(-2, 2)
                complete = f.read() == b"\xff\xd9"
            if not complete:  # no end marker: decodable ones the engine re-saves, the rest are cut short
                with Image.open(p) as im:
                    im.load()
    except UnidentifiedImageError:
        what = describe_file(p)
        return f"corrupt {what[2:]} (its header cannot be read)" if what.endswith("image") else f"not an image ({what})"
    except (OSError, SyntaxError, ValueError) as e:
        return f"truncated ({size} bytes; {e})" if "runcat" in str(e) else f"corrupt image ({e})"
    return None


def _report_what_is_wrong_with_images() -> None:
    """The engine's dataset check names the real problem of an unreadable image with its file name.

    Its own check reads any file Pillow cannot identify as a possible HEIF image and reports the missing HEIF plugin
    ("No module named 'pi_heif'") for an empty, random or text file.
    """
    import ultralytics.data.utils as data_utils

    engine_check = data_utils.check_image

    def check_image(im_file: str) -> tuple[str, tuple[int, int]]:
        problem = image_problem(im_file)
        if problem:
            raise ValueError(problem)  # verify_image_label reports "<file>: ignoring corrupt image/label: <problem>"
        return engine_check(im_file)

    data_utils.check_image = check_image


_report_what_is_wrong_with_images()


def _prepare_datasets_with_our_code() -> None:
    """The engine never runs a data YAML's ``download:``, and reports bad label lines by label file and line.

    Its ``check_det_dataset`` exec's a YAML's Python ``download:`` (or runs a ``bash`` one) when the val images are
    missing. Every engine module that imported it gets ``utils.datayaml``'s wrapper instead, which prepares the
    dataset with our steps (a script only when the user allowed it) and calls the engine's check without download.
    Its detection dataset verifies labels with ``utils.labels.verify_image_label``.
    """
    import sys

    import ultralytics.data.utils as data_utils

    from utils import datayaml, labels

    engine_check = data_utils.check_det_dataset
    if getattr(engine_check, "_ours", False):
        return

    def check_det_dataset(dataset, autodownload: bool = True, split: str = "") -> dict:
        return datayaml.engine_check_det_dataset(dataset, autodownload, split, engine_check=engine_check)

    check_det_dataset._ours = True
    for name, module in list(sys.modules.items()):  # modules imported later find the wrapper in data_utils
        if name.startswith("ultralytics") and getattr(module, "check_det_dataset", None) is engine_check:
            module.check_det_dataset = check_det_dataset
    labels.install()


_prepare_datasets_with_our_code()


def build_model(cfg: str | Path | dict, nc: int, hyp: dict[str, float], imgsz: int, weights: str | None = None,
                verbose: bool = True) -> Model:
    """Our model for training: built from ``cfg``, optionally started from ``weights``, carrying its loss hyps.

    YOLOv5 v6.0 scales the loss gains once at train start by the number of detection levels, classes and image size;
    the scaled values are stored in ``model.hyp`` (and so in every checkpoint).
    """
    from utils.loss import scale_hyp_for_model

    model = Model(cfg, nc=nc, verbose=verbose)
    if weights:
        from utils.checkpoint import transfer_weights

        transfer_weights(model, weights, exclude=("anchors",))  # the YAML's anchors win, as in YOLOv5 with --cfg
    model.hyp = scale_hyp_for_model(hyp, nl=model.model[-1].nl, nc=nc, imgsz=imgsz)
    return model


def launched_world_size() -> int:
    """Processes of a job started by ``torch.distributed.run`` (all machines together), or 1 for a plain process."""
    return int(os.environ.get("WORLD_SIZE", 1)) if "LOCAL_RANK" in os.environ else 1


def device_count(device: str | None) -> int:
    """Devices named by a ``--device`` string: ``0,1,2`` -> 3, ``cpu`` or ``0`` or nothing -> 1."""
    return len([d for d in str(device or "").split(",") if d.strip()]) or 1


@contextlib.contextmanager
def cpu_ddp(enabled: bool) -> Any:
    """Within the block, DistributedDataParallel accepts the engine's ``device_ids=[device.index]`` for CPU modules.

    The engine always passes ``device_ids``, which DDP rejects for a module on the CPU (it wants ``None`` there);
    gloo processes on the CPU are how the tests and CI train with DDP.
    """
    if not enabled:
        yield
        return
    ddp = torch.nn.parallel.DistributedDataParallel

    class CPUDistributedDataParallel(ddp):
        def __init__(self, module: torch.nn.Module, device_ids: Any = None, **kwargs: Any):
            super().__init__(module, device_ids=None, **kwargs)

    torch.nn.parallel.DistributedDataParallel = CPUDistributedDataParallel
    try:
        yield
    finally:
        torch.nn.parallel.DistributedDataParallel = ddp


class CheckpointSaveError(ValueError):
    """A checkpoint that could not be written (a full disk...); the message names the file and what is kept."""


def checkpoint_save_error(e: OSError, file: Path, kept: Path | None,
                          resume: str | None = "python train.py --resume") -> CheckpointSaveError:
    """One line for a failed checkpoint write: the file, why (the disk is full, or the OS's reason), what is intact
    and how to go on (``resume``: the command that continues from ``kept``; None: run again)."""
    why = os_error_reason(e)
    if kept is not None and kept.is_file():
        then = f"continue with {resume} {kept}" if resume else "run again"
        after = f"the previous {kept.name} is intact; free disk space, then {then}"
    else:
        after = "no earlier checkpoint was written; free disk space and start again"
    return CheckpointSaveError(f"could not save checkpoint {file}: {why}; training stopped, {after}")


def os_error_reason(e: OSError) -> str:
    """'the disk is full (ENOSPC: ...)' or the OS's own words with the error's name ('Permission denied (EACCES)')."""
    import errno

    code = errno.errorcode.get(e.errno, "") if e.errno else ""
    if e.errno == errno.ENOSPC:
        return "the disk is full (ENOSPC: no space left on device)"
    return f"{e.strerror or e}{f' ({code})' if code else ''}"


class _CheckpointPath(type(Path())):
    """A checkpoint path whose ``write_bytes`` tags the OSError it raises with the file (the engine's save writes
    several; the error must name the one that failed)."""

    def write_bytes(self, data):
        try:
            return super().write_bytes(data)
        except OSError as e:
            e.checkpoint_file = Path(self)
            raise


class AtomicCheckpoints:
    """Trainer mixin: write each checkpoint to a temporary file first and rename it into place.

    A crash (or a full disk) mid-write then leaves the previous ``last.pt``/``best.pt`` intact. A failed write removes
    its temporary (or partial ``epochN.pt``) file and stops training with one ``CheckpointSaveError`` line naming the
    file and the reason (the disk is full: ENOSPC); the same holds for the optimizer strip after the last epoch.
    """

    resume_command: str | None = "python train.py --resume"  # how a user continues from last.pt (None: no resume)

    def save_model(self) -> bool:
        final = {"last": self.last, "best": self.best}
        temps = {k: _CheckpointPath(p.with_name(p.name + ".tmp")) for k, p in final.items()}
        for t in temps.values():
            t.unlink(missing_ok=True)
        wdir = self.wdir
        self.last, self.best, self.wdir = temps["last"], temps["best"], _CheckpointPath(wdir)
        try:
            saved = super().save_model()
        except OSError as e:
            failed = getattr(e, "checkpoint_file", None)
            for t in temps.values():
                t.unlink(missing_ok=True)
            if failed is not None and failed not in temps.values():
                failed.unlink(missing_ok=True)  # a partial epochN.pt, written in place by the engine
            named = next((final[k] for k, t in temps.items() if t == failed), failed or final["last"])
            raise checkpoint_save_error(e, named, final["last"], self.resume_command) from None
        finally:
            self.last, self.best, self.wdir = final["last"], final["best"], wdir
        for k, t in temps.items():
            if t.exists():
                os.replace(t, final[k])
        return saved

    def final_eval(self):
        """The engine's final step, with its optimizer strip of last.pt/best.pt written to a temporary file and
        renamed into place (the engine writes the checkpoint in place, which a full disk would truncate)."""
        import ultralytics.engine.trainer as engine_trainer

        strip = engine_trainer.strip_optimizer

        def atomic_strip(f, s="", updates=None):
            target = Path(s or f)
            tmp = target.with_name(target.name + ".tmp")
            try:
                out = strip(f, str(tmp), updates=updates)
                os.replace(tmp, target)
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise CheckpointSaveError(f"could not strip the optimizer from {target}: {os_error_reason(e)}; "
                                          f"{target.name} is kept as trained (with its optimizer state); free disk "
                                          f"space") from None
            return out

        engine_trainer.strip_optimizer = atomic_strip
        try:
            return super().final_eval()
        finally:
            engine_trainer.strip_optimizer = strip


class YOLOv5Trainer(ResultsLog, AtomicCheckpoints, DetectionTrainer):
    """Ultralytics' detection trainer running our anchor-based YOLOv5 model and loss.

    ``YOLOv5Trainer(overrides, hyp=..., weights=..., autoanchor=True)``: ``overrides`` are engine arguments
    (``data``, ``model`` = the model YAML, ``epochs``…), ``hyp`` the YOLOv5 hyperparameters (both halves).
    """

    def __init__(self, cfg=None, overrides: dict | None = None, _callbacks=None, hyp: dict | None = None,
                 weights: str | None = None, autoanchor: bool = True, sync_bn: bool = False):
        hyp = load_hyp(hyp if hyp is not None else DEFAULT_HYP_FILE)
        engine_hyp, self.loss_hyp = split_hyp(hyp)
        overrides = dict(overrides or {})
        if not overrides.get("resume"):  # a resumed run takes its settings from its checkpoint
            overrides = {**YOLOV5_ENGINE_DEFAULTS, **engine_hyp, **overrides}
        kwargs = {"overrides": overrides, "_callbacks": _callbacks}
        if cfg is not None:
            kwargs["cfg"] = cfg
        super().__init__(**kwargs)
        if launched_world_size() > 1:  # the engine counts only this machine's --device list (and 0 on the CPU)
            self.world_size = launched_world_size()
        self.weights = weights
        self.sync_bn = sync_bn
        if not self.resume and not isinstance(self.model, torch.nn.Module):
            self.model = build_model(self.args.model, self.data["nc"], self.loss_hyp, self.args.imgsz, weights,
                                     verbose=RANK in {-1, 0})
            # read once the training labels are loaded; anchors given only as a count in the YAML are always computed
            counted = isinstance(self.model.yaml.get("anchors"), int)
            if counted and not autoanchor:
                LOGGER.warning(f"{self.args.model} gives 'anchors' only as a count: computing them despite "
                               f"--noautoanchor")
            self.model._autoanchor_pending = "force" if counted else autoanchor

    # ----- several processes (torch.distributed.run) ------------------------------------------------
    def train(self):
        try:
            super().train()
        finally:
            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()

    def _setup_ddp(self):
        """Join the job's process group (NCCL on GPUs as the engine does, gloo on the CPU); take rank 0's run folder."""
        if self.device.type == "cpu":
            dist.init_process_group("gloo", rank=RANK, world_size=self.world_size, timeout=timedelta(hours=3))
        else:
            per_machine, named = int(os.environ.get("LOCAL_WORLD_SIZE", 1)), device_count(self.args.device)
            if named < per_machine:
                example = ",".join(map(str, range(per_machine)))
                raise ValueError(f"--device names {named} GPU(s) but torch.distributed.run started {per_machine} "
                                 f"processes on this machine; pass one GPU per process, e.g. --device {example}")
            super()._setup_ddp()
        # Every rank computed its own exp/expN before any folder existed; rank 0's is the run's (it alone writes).
        folder = [str(self.save_dir)]
        dist.broadcast_object_list(folder, src=0)
        self.save_dir = Path(folder[0])
        self.wdir = self.save_dir / "weights"
        self.last, self.best, self.csv = self.wdir / "last.pt", self.wdir / "best.pt", self.save_dir / "results.csv"

    def _setup_train(self):
        with cpu_ddp(self.world_size > 1 and self.device.type == "cpu"):
            super()._setup_train()

    def final_eval(self):
        """Validate best.pt. With gloo processes on the CPU rank 0 does it alone once the job is done, as YOLOv5 does:
        the engine's validator would put every DDP rank on a CUDA device."""
        if not (self.world_size > 1 and self.device.type == "cpu"):
            return super().final_eval()
        dist.barrier()
        dist.destroy_process_group()
        if RANK == 0:
            import ultralytics.engine.validator as base_val
            import ultralytics.models.yolo.detect.val as detect_val

            saved = base_val.RANK, detect_val.RANK
            base_val.RANK = detect_val.RANK = -1  # the modules read the launcher's RANK once, at import
            try:
                super().final_eval()
            finally:
                base_val.RANK, detect_val.RANK = saved

    # ----- model ------------------------------------------------------------------------------------
    def get_model(self, cfg=None, weights=None, verbose: bool = True) -> Model:
        """Model for a resumed run: rebuilt from the checkpoint's YAML, weights and (already scaled) loss hyps."""
        model = Model(cfg, nc=self.data["nc"], verbose=verbose and RANK == -1)
        if weights is not None:
            model.load_state_dict(weights.float().state_dict())
            model.hyp = dict(getattr(weights, "hyp", None) or {})
        return model

    def setup_model(self):
        ckpt = None if isinstance(self.model, torch.nn.Module) else super().setup_model()
        if self.sync_bn and self.device.type == "cpu":
            LOGGER.warning("--sync-bn: SyncBatchNorm runs on GPUs only; each CPU process keeps its own BatchNorm")
        elif self.sync_bn and self.world_size > 1:
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            LOGGER.info("Using SyncBatchNorm()")
        return ckpt

    def set_model_attributes(self):
        super().set_model_attributes()
        model = unwrap_model(self.model)
        if not getattr(model, "hyp", None):
            from utils.loss import scale_hyp_for_model

            model.hyp = scale_hyp_for_model(self.loss_hyp, nl=model.model[-1].nl, nc=self.data["nc"],
                                            imgsz=self.args.imgsz)

    def get_dataloader(self, dataset_path, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        """The engine's loader; in training, no batch of one for a model whose modules need two (utils/batches.py)."""
        from utils.batches import modules_needing_pairs, pairs_only

        model = unwrap_model(self.model) if isinstance(self.model, torch.nn.Module) else None
        needy = modules_needing_pairs(model) if mode == "train" and model is not None else []
        if not needy:
            return super().get_dataloader(dataset_path, batch_size, rank, mode)
        import ultralytics.models.yolo.detect.train as detect_train

        build = detect_train.build_dataloader  # the name the engine's get_dataloader calls
        detect_train.build_dataloader = pairs_only(build, needy, max(self.world_size, 1))
        try:
            return super().get_dataloader(dataset_path, batch_size, rank, mode)
        finally:
            detect_train.build_dataloader = build

    def _build_train_pipeline(self):
        super()._build_train_pipeline()
        model = unwrap_model(self.model)
        if getattr(model, "_autoanchor_pending", False):
            from utils.autoanchor import check_anchors

            if RANK in {-1, 0}:
                check_anchors(model, self.train_loader.dataset, thr=model.hyp["anchor_t"], imgsz=self.args.imgsz,
                              force=model._autoanchor_pending == "force")
            if self.world_size > 1:  # after the DDP wrap, which synchronised buffers once: send rank 0's anchors
                dist.broadcast(model.model[-1].anchors, src=0)
        model._autoanchor_pending = False

    # ----- YOLOv5 v6.0 schedule -------------------------------------------------------------------
    def _get_warmup_iterations(self, num_batches: int) -> int:
        """max(warmup_epochs, 100 iterations) as in YOLOv5 v6.0, leaving the last epoch free of warmup."""
        if self.args.warmup_epochs <= 0:
            return 0
        nw = max(round(self.args.warmup_epochs * num_batches), 100)
        return min(nw, max(self.epochs - 1, 0) * num_batches) if self.epochs > 1 else 0

    # ----- validation -----------------------------------------------------------------------------
    def get_validator(self):
        return YOLOv5Validator(self.test_loader, save_dir=self.save_dir, args=copy(self.args),
                               _callbacks=self.callbacks)


class YOLOv5Validator(DetectionValidator):
    """Ultralytics' detection validator; COCO-format JSON is scored with ``pycocotools`` (no network needed)."""

    def coco_evaluate(self, stats: dict, pred_json, anno_json, iou_types="bbox", suffix="Box") -> dict:
        if not (self.args.save_json and len(self.jdict) and (self.is_coco or self.gdict)):
            return stats
        try:
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        except ImportError:
            LOGGER.warning("pycocotools is not installed: pip install pycocotools")
            return stats
        LOGGER.info(f"\nEvaluating pycocotools mAP using {pred_json} and "
                    f"{anno_json if not self.gdict else 'labels'}...")
        try:
            if isinstance(anno_json, dict):
                anno = COCO()
                anno.dataset = _with_coco_fields(anno_json)
                anno.createIndex()
            else:
                if not Path(anno_json).is_file():
                    raise FileNotFoundError(f"{anno_json} not found")
                anno = COCO(str(anno_json))
            pred = anno.loadRes(str(pred_json) if isinstance(pred_json, Path) else pred_json)
            ev = COCOeval(anno, pred, "bbox")
            files = self.dataloader.dataset.im_files
            ev.params.imgIds = anno.getImgIds() if self.gdict else [int(Path(x).stem) for x in files]
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            map50_95, map50 = float(ev.stats[0]), float(ev.stats[1])
            LOGGER.info(f"pycocotools: mAP@.5 {map50:.4f}, mAP@.5:.95 {map50_95:.4f} "
                        f"(ours: {stats.get('metrics/mAP50(B)', float('nan')):.4f}, "
                        f"{stats.get('metrics/mAP50-95(B)', float('nan')):.4f})")
            stats["metrics/pycocotools_mAP50(B)"] = map50
            stats["metrics/pycocotools_mAP50-95(B)"] = map50_95
            if self.is_coco and not self.training:
                stats["metrics/mAP50(B)"], stats["metrics/mAP50-95(B)"] = map50, map50_95
                stats["fitness"] = 0.9 * map50_95 + 0.1 * map50
        except Exception as e:  # a scoring failure must not lose the run's own metrics
            LOGGER.warning(f"pycocotools unable to run: {e}")
        return stats


def _with_coco_fields(gt: dict) -> dict:
    """Fill the fields pycocotools needs (area, iscrowd, id) in a ground-truth dict built from YOLO labels."""
    gt = deepcopy(gt)
    for i, a in enumerate(gt.get("annotations", []), 1):
        a.setdefault("id", i)
        a.setdefault("iscrowd", 0)
        if "area" not in a and "bbox" in a:
            a["area"] = float(a["bbox"][2] * a["bbox"][3])
    gt.setdefault("info", {})
    return gt


def increment_dir(path: str | Path, exist_ok: bool = False) -> Path:
    """YOLOv5's run folders: runs/train/exp, exp2, exp3, ... (``exist_ok`` reuses ``path``), created and locked for
    this run by ``utils.rundir.claim_run_dir``: two runs started together never share one. Every script gets its run
    folder here; the engine is always given it as ``save_dir`` (its own ``increment_path`` is never reached)."""
    from utils.rundir import claim_run_dir

    return claim_run_dir(path, exist_ok)


def latest_run(project: str | Path) -> Path:
    """The most recently written ``last.pt`` under ``project`` (for a bare ``--resume``)."""
    runs = sorted(Path(project).glob("**/last.pt"), key=os.path.getmtime)
    if not runs:
        raise FileNotFoundError(f"--resume: no last.pt found under {project}; pass the checkpoint path instead")
    return runs[-1]


def cfg_of_weights(weights: str | Path, folder: Path) -> str:
    """Write the model YAML stored in a checkpoint (ours or an official YOLOv5 one) to ``folder``; return its path."""
    from utils.checkpoint import load_checkpoint

    ckpt = load_checkpoint(weights)
    model = ckpt.get("ema") or ckpt.get("model")
    cfg = {k: v for k, v in deepcopy(model.yaml).items() if k != "yaml_file"}
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{Path(weights).stem}-cfg.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(out)
