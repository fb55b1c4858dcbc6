"""Glue between our classifiers (``models/classify.py``) and the Ultralytics engine's classification workflow (pinned:
ultralytics==8.4.190); the classification counterpart of ``utils/engine.py``.

- ``ClassifierTrainer``: the engine's ``ClassificationTrainer`` on our ``ClassificationModel`` (from a classification
  YAML, a detection YAML cut at ``--cutoff`` as YOLOv5 does, or a ``.pt`` loaded by our restricted loader), with
  YOLOv5's classification defaults, the hyperparameter files' recipes (step or cosine schedules, CIFAR's padded random
  crop, label smoothing), atomic checkpoints and a final validation that never unpickles code.
- ``ClassifierValidator``: top-1/top-5 and the confusion matrix from the engine, printed as YOLOv5's
  ``Class Images top1_acc top5_acc`` table (``all`` row, per-class rows with ``verbose``); fitness = top-1.
- classification hyperparameter files (``data/hyps/hyp.cifar100.yaml``...), checked key by key before training.
"""

from __future__ import annotations

import os
from copy import copy
from pathlib import Path
from typing import Any

import torch  # noqa: E402
import yaml  # noqa: E402
from ultralytics.data.augment import DEFAULT_MEAN, DEFAULT_STD  # noqa: E402
from ultralytics.models.yolo.classify import ClassificationTrainer, ClassificationValidator  # noqa: E402
from ultralytics.utils import LOGGER, RANK  # noqa: E402

from models.classify import (  # noqa: E402
    ClassificationModel,
    cls_yaml_from_detection,
    is_classification_yaml,
    load_cls_yaml,
    resolve_cls_cfg,
    with_ksize,
)
from utils import offline  # noqa: F401  (must precede the engine import)
from utils.clsdata import resolve_cls_data  # noqa: E402
from utils.engine import AtomicCheckpoints, CheckpointSaveError, HypError, find_file, os_error_reason  # noqa: E402
from utils.results import CLASSIFY_COLUMNS, CLASSIFY_PANELS, ResultsLog  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# Hyperparameters of a classification recipe. Numbers the engine takes under the same name:
ENGINE_NUMBERS = ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr",
                  "hsv_h", "hsv_s", "hsv_v", "fliplr", "flipud", "scale", "erasing", "nbs", "dropout")
# ... and ours: label smoothing of the loss, CIFAR's random crop of a zero-padded image (pixels of padding, 0 = the
# engine's RandomResizedCrop), the factor of a step schedule.
OWN_NUMBERS = ("label_smoothing", "crop_padding", "lr_gamma")
# augment: false (YOLOv5's default, as in a YOLOv5 install without albumentations) trains on the evaluation transform
# (resize, centre crop, to tensor); true applies the training augmentation of the keys above (RandomResizedCrop of
# area 1-scale..1, flips, colour jitter, erasing; or CIFAR's padded crop with crop_padding).
BOOL_KEYS = ("augment",)
CHOICES = {"optimizer": ("SGD", "Adam", "AdamW", "RMSProp"), "schedule": ("linear", "cosine", "step")}
# milestones: fractions of the epochs at which a step schedule multiplies the learning rate by lr_gamma
LIST_KEYS = ("milestones",)

# YOLOv5's classify/train.py defaults (Adam 0.001 with betas (0.9, 0.999), decay 5e-5 on weights only, label
# smoothing 0.1, linear LR to 1%, no warmup), for runs without a recipe file. Its training images get the evaluation
# transform unless albumentations is installed, so augment is off; with augment on, the values below are the
# albumentations recipe YOLOv5 then uses: RandomResizedCrop(0.08-1), flip, colour jitter 0.4, no RandAugment/erasing.
YOLOV5_CLS_HYP: dict[str, Any] = {
    "optimizer": "Adam", "lr0": 0.001, "lrf": 0.01, "momentum": 0.9, "weight_decay": 5e-5, "warmup_epochs": 0.0,
    "label_smoothing": 0.1, "schedule": "linear", "augment": False, "scale": 0.92, "fliplr": 0.5, "flipud": 0.0,
    "hsv_h": 0.015, "hsv_s": 0.4, "hsv_v": 0.4, "erasing": 0.0, "crop_padding": 0.0,
}
ENGINE_DEFAULTS: dict[str, Any] = {"task": "classify", "mode": "train", "name": "exp", "auto_augment": None,
                                   "seed": 0, "deterministic": True, "patience": 100}


def load_cls_hyp(path: str | Path | dict | None = None) -> dict[str, Any]:
    """YOLOv5's classification defaults overridden by a recipe file (or dict); every key and value is checked."""
    if path is None:
        return dict(YOLOV5_CLS_HYP)
    if isinstance(path, dict):
        hyp, where = dict(path), "hyp"
    else:
        file = find_file(path, ROOT / "data" / "hyps")
        where = str(file)
        hyp = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        if not isinstance(hyp, dict):
            raise HypError(f"{where}: expected a mapping of hyperparameter names to values")
    known = (*ENGINE_NUMBERS, *OWN_NUMBERS, *BOOL_KEYS, *CHOICES, *LIST_KEYS)
    if unknown := sorted(set(hyp) - set(known)):
        raise HypError(f"{where}: unknown classification hyperparameter(s) {', '.join(unknown)}; known keys: "
                       f"{', '.join(known)}")
    for k, v in hyp.items():
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        if k in CHOICES and v not in CHOICES[k]:
            raise HypError(f"{where}: '{k}' must be one of {', '.join(CHOICES[k])}, got {v!r}")
        if k in LIST_KEYS and not (isinstance(v, list) and all(isinstance(x, (int, float)) and 0 < x < 1 for x in v)):
            raise HypError(f"{where}: '{k}' must be a list of fractions of the epochs between 0 and 1, got {v!r}")
        if k in BOOL_KEYS and not isinstance(v, bool):
            raise HypError(f"{where}: '{k}' must be true or false, got {v!r}")
        if k not in CHOICES and k not in LIST_KEYS and k not in BOOL_KEYS and not number:
            raise HypError(f"{where}: '{k}' must be a number, got {v!r}")
    return {**YOLOV5_CLS_HYP, **hyp}


def build_classifier(model: str | Path, nc: int, cutoff: int | None = None, dropout: float | None = None,
                     verbose: bool = True, ksize: str | list[int] | None = None) -> ClassificationModel:
    """Our classifier from ``--model``: a classification YAML, a detection YAML (backbone cut at ``cutoff``, default
    10, plus YOLOv5's Classify head), or a ``.pt`` (a classifier, or a detector whose backbone weights are kept),
    with ``nc`` outputs. ``ksize`` (``"3557"``) replaces an ECA-Net YAML's per-stage ECA kernel sizes."""
    from utils.checkpoint import checkpoint_model, load_checkpoint, transfer_weights

    if ksize and str(model).endswith(".pt"):
        raise ValueError(f"--ksize {ksize}: {model} is a checkpoint whose kernel sizes are fixed; --ksize changes an "
                         f"ECA-Net YAML (e.g. --model models/cls/eca-resnet50.yaml --ksize 3557)")
    if str(model).endswith(".pt"):
        src = checkpoint_model(load_checkpoint(model))
        if isinstance(src, ClassificationModel):
            m = src.train()
            m.reshape_outputs(nc)
        else:  # a detector: YOLOv5's classifier from its backbone, weights transferred
            m = ClassificationModel(cls_yaml_from_detection(src.yaml, nc, cutoff or 10), verbose=verbose)
            transfer_weights(m, src)
    else:
        cfg = resolve_cls_cfg(model)
        d = load_cls_yaml(cfg)
        if is_classification_yaml(d):
            if cutoff:
                raise ValueError(f"--cutoff {cutoff}: {cfg} is a classification YAML; --cutoff cuts detection models")
            m = ClassificationModel(with_ksize({**d, "yaml_file": str(cfg)}, ksize), nc=nc, verbose=verbose)
        else:
            m = ClassificationModel(cls_yaml_from_detection({**d, "yaml_file": str(cfg)}, nc, cutoff or 10),
                                    verbose=verbose)
    if dropout is not None:
        for x in m.modules():
            if isinstance(x, torch.nn.Dropout):
                x.p = dropout
    for p in m.parameters():
        p.requires_grad = True
    return m


def load_classifier(weights: str | Path) -> tuple[object, int | None]:
    """``(model, image size it was trained at or None)``: a ``.pt`` through our restricted checkpoint loader (never a
    full unpickle), an export as its path for the engine's backend."""
    w = Path(weights)
    if w.suffix == ".pt":
        from models.classify import ClassificationModel
        from utils.checkpoint import CheckpointError, checkpoint_model, load_checkpoint

        ckpt = load_checkpoint(w)
        model = checkpoint_model(ckpt)
        if not isinstance(model, ClassificationModel):
            raise CheckpointError(f"{w}: holds a detection model; validate it with val.py, or train a classifier "
                                  f"from it with classify/train.py --model {w}")
        imgsz = (ckpt.get("train_args") or {}).get("imgsz")
        return model.float().eval(), int(imgsz) if isinstance(imgsz, int) else None
    if not w.exists():
        raise FileNotFoundError(f"--weights {w}: file or folder not found")
    from utils.checkpoint import check_export_format

    return str(check_export_format(w, task="classify")), None


class ClassifierTrainer(ResultsLog, AtomicCheckpoints, ClassificationTrainer):
    """The engine's classification trainer running our classifier with a YOLOv5-style recipe; results.csv and
    TensorBoard under YOLOv5-classify's names (utils/results.py).

    ``ClassifierTrainer(overrides, hyp=..., cutoff=None)``: ``overrides`` are engine arguments (``data`` = an image
    folder, ``model`` = YAML or ``.pt``, ``epochs``, ``batch``...), ``hyp`` a recipe file or dict (see
    ``load_cls_hyp``); keys of ``overrides`` win over the recipe.
    """

    def __init__(self, overrides: dict | None = None, hyp: str | Path | dict | None = None, cutoff: int | None = None,
                 _callbacks=None, ksize: str | list[int] | None = None):
        hyp = load_cls_hyp(hyp)
        overrides = dict(overrides or {})
        self.recipe = {k: hyp[k] for k in (*OWN_NUMBERS, *BOOL_KEYS, "schedule", *LIST_KEYS) if k in hyp}
        engine = {k: v for k, v in hyp.items() if k in (*ENGINE_NUMBERS, "optimizer")}
        engine["cos_lr"] = hyp.get("schedule") == "cosine"
        for k in ("label_smoothing", "augment"):
            if k in overrides:
                self.recipe[k] = overrides.pop(k)
        if "nbs" not in hyp and (overrides.get("batch") or 0) > 0:
            engine["nbs"] = overrides["batch"]  # YOLOv5 classifiers: no gradient accumulation, weight decay as given
        dropout = overrides.pop("dropout", None)
        overrides = {**ENGINE_DEFAULTS, **engine, **overrides}
        if overrides.get("data"):
            overrides["data"] = str(resolve_cls_data(overrides["data"]))  # a folder, or a named dataset (made once)
        super().__init__(overrides=overrides, _callbacks=_callbacks)
        self.model = build_classifier(self.args.model, self.data["nc"], cutoff, dropout if dropout is not None else
                                      hyp.get("dropout"), verbose=RANK in {-1, 0}, ksize=ksize)

    resume_command = None  # classify/train.py has no --resume
    results_columns, results_panels, results_width = CLASSIFY_COLUMNS, CLASSIFY_PANELS, 23

    def set_model_attributes(self):
        super().set_model_attributes()
        self.model.label_smoothing = float(self.recipe.get("label_smoothing", 0.0))
        self.model.criterion = None  # rebuilt with the smoothing on first use

    def build_dataset(self, img_path: str, mode: str = "train", batch=None):
        """The engine's dataset. Training images get the evaluation transform (resize, centre crop) unless the recipe
        has ``augment: true`` (or ``--augment``): then the engine's augmentation, or with ``crop_padding`` CIFAR's
        (pad, random crop, flip)."""
        dataset = super().build_dataset(img_path, mode, batch)
        if mode != "train":
            return dataset
        pad = int(self.recipe.get("crop_padding", 0))
        if not self.recipe.get("augment"):
            from ultralytics.data.augment import classify_transforms

            dataset.torch_transforms = classify_transforms(self.args.imgsz)  # what the validator's dataset uses
        elif pad > 0:
            import torchvision.transforms as T

            size = self.args.imgsz
            dataset.torch_transforms = T.Compose([
                T.Resize(size), T.CenterCrop(size), T.RandomCrop(size, padding=pad),
                T.RandomHorizontalFlip(self.args.fliplr), T.ToTensor(),
                T.Normalize(mean=torch.tensor(DEFAULT_MEAN), std=torch.tensor(DEFAULT_STD))])
        return dataset

    def _setup_scheduler(self):
        """``schedule: step`` multiplies the learning rate by ``lr_gamma`` at each milestone (MultiStepLR)."""
        if self.recipe.get("schedule") != "step":
            return super()._setup_scheduler()
        gamma, steps = self.recipe.get("lr_gamma", 0.1), [m * self.epochs for m in self.recipe.get("milestones", [])]
        self.lf = lambda x: gamma ** sum(x >= s for s in steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda=self.lf)

    def get_validator(self):
        return ClassifierValidator(self.test_loader, self.save_dir, args=copy(self.args), _callbacks=self.callbacks)

    def final_eval(self):
        """Strip the optimizer from last.pt/best.pt and validate best.pt, all through our restricted loader."""
        from utils.checkpoint import load_model

        for f in (self.last, self.best):
            if f.exists():
                strip_checkpoint(f)
        if self.best.exists():
            LOGGER.info(f"\nValidating {self.best}...")
            self.validator.args.plots = self.args.plots
            self.validator.args.compile = False
            self.metrics = self.validator(model=load_model(self.best, fuse=False))
            self.metrics.pop("fitness", None)
            self.epoch += 1  # log best metrics at step epochs+1, as the engine does
            self.run_callbacks("on_fit_epoch_end")
            self.epoch -= 1


def strip_checkpoint(f: str | Path) -> None:
    """Rewrite a training checkpoint for inference (fp16 model, no optimizer), loading it without running code."""
    from utils.checkpoint import checkpoint_model, load_checkpoint

    f = Path(f)
    ckpt = load_checkpoint(f)
    keep = {k: ckpt.get(k) for k in ("epoch", "best_fitness", "train_args", "train_metrics", "date", "version")}
    tmp = f.with_name(f.name + ".tmp")
    try:
        torch.save({**keep, "model": checkpoint_model(ckpt).half(), "ema": None, "optimizer": None, "updates": None},
                   tmp)
        os.replace(tmp, f)
    except OSError as e:  # a full disk: the checkpoint as trained stays, the partial copy goes
        tmp.unlink(missing_ok=True)
        raise CheckpointSaveError(f"could not strip the optimizer from {f}: {os_error_reason(e)}; {f.name} is kept as "
                                  f"trained (with its optimizer state); free disk space") from None


class ClassifierValidator(ClassificationValidator):
    """The engine's classification validator with YOLOv5's table: ``Class Images top1_acc top5_acc``, an ``all``
    row and, with ``verbose``, one row per class; best.pt is chosen by top-1 as in YOLOv5."""

    def get_desc(self) -> str:
        return f"{'Class':>24}{'Images':>12}{'top1_acc':>12}{'top5_acc':>12}"

    def get_stats(self) -> dict[str, float]:
        stats = super().get_stats()
        stats["fitness"] = self.metrics.top1
        return stats

    def print_results(self) -> None:
        targets = torch.cat(self.targets) if self.targets else torch.zeros(0, dtype=torch.int32)
        LOGGER.info(f"{'all':>24}{len(targets):>12}{self.metrics.top1:>12.3g}{self.metrics.top5:>12.3g}")
        if self.args.verbose and not self.training and len(targets):
            pred = torch.cat(self.pred)
            correct = (pred == targets[:, None]).float()
            for i, name in self.names.items():
                c = correct[targets == i]
                if len(c):
                    top1, top5 = c[:, 0].mean().item(), c.max(1)[0].mean().item()
                    LOGGER.info(f"{name:>24}{len(c):>12}{top1:>12.3g}{top5:>12.3g}")
