"""train.py's YOLOv5 options that change how training batches are drawn and formed, on the engine's data loader:

- ``--image-weights``: each epoch, images are drawn with replacement, weighted by the classes they hold; a class weighs
  its inverse frequency in the training labels times (1 - its last validation mAP@.5:.95)^2 (YOLOv5's weighting).
- ``--quad``: YOLOv5's quad collate: every 4 loaded images become one image of twice the size, either the first one
  upsampled 2x or the four tiled 2x2 (half the time each), with the labels mapped accordingly.
- the W&B options (``--bbox_interval``, ``--entity``, ``--upload_dataset``, ``--artifact_alias``): accepted.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

WANDB_OPTIONS = {"bbox_interval": -1, "entity": None, "upload_dataset": False, "artifact_alias": "latest"}


# ----- --image-weights -------------------------------------------------------------------------------------------
def class_weights(labels: list[np.ndarray], nc: int) -> np.ndarray:
    """Inverse class frequency over all labels (a class without labels counts once), normalised to sum to 1."""
    classes = np.concatenate([np.asarray(c, dtype=int).reshape(-1) for c in labels]) if labels else np.zeros(0, int)
    counts = np.bincount(classes, minlength=nc)[:nc].astype(float)
    counts[counts == 0] = 1
    w = 1 / counts
    return w / w.sum()


def image_weights(labels: list[np.ndarray], nc: int, cw: np.ndarray) -> np.ndarray:
    """An image's weight: the sum of its labels' class weights (an image without labels weighs 0)."""
    counts = np.array([np.bincount(np.asarray(c, dtype=int).reshape(-1), minlength=nc)[:nc] for c in labels])
    return (counts * cw.reshape(1, nc)).sum(1) if len(labels) else np.zeros(0)


def epoch_weights(labels: list[np.ndarray], nc: int, maps: np.ndarray | None = None) -> np.ndarray:
    """YOLOv5's per-image sampling weights: class weights x nc x (1 - per-class mAP)^2 / nc, summed per image."""
    maps = np.zeros(nc) if maps is None else np.asarray(maps, dtype=float)[:nc]
    cw = class_weights(labels, nc) * nc * (1 - maps) ** 2 / nc
    return image_weights(labels, nc, cw)


class ImageWeightSampler(torch.utils.data.Sampler):
    """``len(weights)`` indices per epoch, drawn with replacement in proportion to ``weights`` (updated between epochs
    by ``set_weights``). Draws happen in the main process as the loader asks for them, so loader workers need no
    copy of the weights."""

    def __init__(self, weights: np.ndarray, seed: int = 0, chunk: int = 64):
        self.n, self.chunk = len(weights), chunk
        self.generator = torch.Generator().manual_seed(seed)
        self.set_weights(weights)

    def set_weights(self, weights: np.ndarray) -> None:
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        if not len(w) or not torch.isfinite(w).all() or w.sum() <= 0:
            w = torch.ones(self.n, dtype=torch.float64)  # nothing to weigh by: every image alike
        self.cumulative = torch.cumsum(w / w.sum(), 0)

    def __iter__(self) -> Iterator[int]:
        left = self.n
        while left > 0:
            k = min(self.chunk, left)
            draws = torch.rand(k, generator=self.generator, dtype=torch.float64)
            yield from torch.searchsorted(self.cumulative, draws).clamp_(max=self.n - 1).tolist()
            left -= k

    def __len__(self) -> int:
        return self.n


def dataset_classes(dataset) -> list[np.ndarray]:
    """The class column of every training image's labels (the engine's ``YOLODataset.labels``)."""
    return [np.asarray(lb.get("cls", np.zeros((0, 1))), dtype=float).reshape(-1) for lb in dataset.labels]


def use_image_weights(trainer) -> None:
    """Draw the trainer's training images by image weights (callbacks on the engine's trainer)."""
    from ultralytics.utils import LOGGER

    state = {}

    def start(trainer) -> None:
        loader = trainer.train_loader
        batches = getattr(getattr(loader, "batch_sampler", None), "sampler", None)  # _RepeatSampler -> BatchSampler
        if getattr(trainer.args, "rect", False) or not hasattr(batches, "sampler"):
            LOGGER.warning("--image-weights: not applied (rectangular batches keep their order); training as usual")
            return
        labels = dataset_classes(loader.dataset)
        state["labels"], state["nc"] = labels, int(trainer.data["nc"])
        state["sampler"] = ImageWeightSampler(epoch_weights(labels, state["nc"]), seed=int(trainer.args.seed))
        batches.sampler = state["sampler"]
        LOGGER.info(f"--image-weights: drawing {len(labels)} training images per epoch by class weights")

    def update(trainer) -> None:
        if "sampler" not in state:
            return
        metrics = getattr(getattr(trainer, "validator", None), "metrics", None)
        maps = getattr(metrics, "maps", None) if metrics is not None else None
        if maps is not None and len(maps) == state["nc"]:
            state["sampler"].set_weights(epoch_weights(state["labels"], state["nc"], maps))

    trainer.add_callback("on_train_start", start)
    trainer.add_callback("on_fit_epoch_end", update)


# ----- --quad ----------------------------------------------------------------------------------------------------
def quad_batch(batch: dict, rng: random.Random | None = None) -> dict:
    """YOLOv5's quad collate on an engine batch: each group of 4 images becomes one image of twice the height and
    width, either the group's first image upsampled 2x (labels unchanged) or the four tiled 2x2 (labels halved and
    moved to their quarter), half the time each. Images beyond a multiple of 4 are dropped; a batch of fewer than 4
    images is kept as it is."""
    rng = rng or random
    img = batch["img"]
    n = img.shape[0] // 4
    if n == 0:
        return batch
    idx, cls, boxes = batch["batch_idx"].long(), batch["cls"], batch["bboxes"]
    shift = {0: (0.0, 0.0), 1: (0.0, 0.5), 2: (0.5, 0.0), 3: (0.5, 0.5)}  # x, y offsets of each quarter
    images, out_idx, out_cls, out_boxes, keep = [], [], [], [], []
    for q in range(n):
        first = 4 * q
        if rng.random() < 0.5:
            im = F.interpolate(img[first:first + 1].float(), scale_factor=2.0, mode="bilinear", align_corners=False)
            images.append(im[0].to(img.dtype))
            m = idx == first
            out_cls.append(cls[m])
            out_boxes.append(boxes[m])
            out_idx.append(torch.full((int(m.sum()),), q, dtype=batch["batch_idx"].dtype))
        else:
            top = torch.cat((img[first], img[first + 2]), 2)  # image 2 to the right of image 0
            bottom = torch.cat((img[first + 1], img[first + 3]), 2)  # image 1 below image 0
            images.append(torch.cat((top, bottom), 1))
            for j in range(4):
                m = idx == first + j
                b = boxes[m].clone()
                dx, dy = shift[j]
                b[:, 0], b[:, 1] = b[:, 0] * 0.5 + dx, b[:, 1] * 0.5 + dy
                b[:, 2:] *= 0.5
                out_cls.append(cls[m])
                out_boxes.append(b)
                out_idx.append(torch.full((int(m.sum()),), q, dtype=batch["batch_idx"].dtype))
        keep.append(first)
    out = dict(batch)
    out["img"] = torch.stack(images)
    out["cls"], out["bboxes"], out["batch_idx"] = torch.cat(out_cls), torch.cat(out_boxes), torch.cat(out_idx)
    for k, v in batch.items():  # per-image lists (file names, shapes): those of each group's first image
        if k not in out or k in ("img", "cls", "bboxes", "batch_idx"):
            continue
        if isinstance(v, (list, tuple)) and len(v) == img.shape[0]:
            out[k] = type(v)(v[i] for i in keep)
    if "resized_shape" in out:
        out["resized_shape"] = [tuple(int(s) * 2 for s in shape) for shape in out["resized_shape"]]
    return out


class QuadCollate:
    """The dataset's own collate followed by ``quad_batch`` (picklable, for loader workers)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, samples: list) -> dict:
        return quad_batch(self.collate(samples))


def use_quad(trainer) -> None:
    """Collate the trainer's training batches with ``quad_batch`` (set before the loader's workers start)."""
    from ultralytics.utils import LOGGER

    def start(trainer) -> None:
        loader = trainer.train_loader
        if getattr(loader, "iterator", None) is not None:
            LOGGER.warning("--quad: the training loader already started; training without quad batches")
            return
        loader.collate_fn = QuadCollate(loader.collate_fn)
        LOGGER.info("--quad: every 4 training images form one image of twice the size (YOLOv5's quad collate)")

    trainer.add_callback("on_pretrain_routine_end", start)


# ----- W&B --------------------------------------------------------------------------------------------------------
def wandb_note(opt) -> str | None:
    """One line on YOLOv5's W&B options when any is given: what this project does with them."""
    given = [f"--{k}" for k, default in WANDB_OPTIONS.items() if getattr(opt, k, default) != default]
    if not given:
        return None
    try:
        import wandb  # noqa: F401

        installed = True
    except ImportError:
        installed = False
    if installed:
        return (f"{', '.join(given)}: W&B options of YOLOv5's own logger; here the engine's W&B callback logs when "
                f"enabled ('yolo settings wandb=True') and these options are not used")
    return f"{', '.join(given)}: not used: W&B logging is off (wandb is not installed; pip install wandb to use it)"


def unused_evolve_note(opt) -> str | None:
    """One line on YOLOv5 v7.0's population-evolution and bucket options when any is given."""
    given = [f"--{k}" for k in ("evolve_population", "resume_evolve", "bucket") if getattr(opt, k, None)]
    if not given:
        return None
    return (f"{', '.join(given)}: not used: --evolve here is YOLOv5's mutation search, which continues when the same "
            f"command is run again (runs/evolve/exp*/evolve.csv), and stores nothing in cloud buckets")
