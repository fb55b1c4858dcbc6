"""YOLOv5 (v6.0) training loss for the anchor-based ``Detect`` head.

The loss has three parts, each averaged and then multiplied by its gain from the hyperparameters:

* **box**: ``1 - CIoU`` between decoded predictions and targets, over every (target, anchor, cell) assignment;
* **obj**: BCE of the objectness logit of every anchor of every cell, the target being the (detached, clamped
  at 0) IoU of the assigned prediction and ``0`` elsewhere; levels are weighted by a fixed balance;
* **cls**: BCE of the class logits of assigned predictions against (optionally label-smoothed) one-hot targets.

Target assignment (per level, vectorised over all targets): a target is matched to every anchor whose width and
height ratios to it are both within ``anchor_t`` (``max(r, 1/r) < anchor_t``), and each match is assigned to the
cell holding the target centre plus, per axis, the one neighbouring cell closer to the centre (left if the centre
lies in the left half of its cell, right if in the right half; likewise up/down) unless that neighbour would be
off the grid or less than one cell away from the border. So a match uses up to three cells.

Hyperparameter scaling: YOLOv5 v6.0's ``train.py`` rescales the box/cls/obj gains to the number of detection layers,
classes and image size *once, before training* (see :func:`scale_hyp_for_model`). :class:`ComputeLoss` uses the
gains it is given exactly as they are and never rescales them, so the glue must call :func:`scale_hyp_for_model`
at train start and store the result as ``model.hyp``.

Returned values follow what ``ultralytics==8.4.190`` expects of a criterion: ``(loss, loss_items)`` where ``loss``
is ``total * batch_size`` (a 1-element tensor with grad; the trainer calls ``.sum()`` on it) and ``loss_items`` is a
dict ``{"box_loss", "obj_loss", "cls_loss"}`` of detached 0-d tensors (its keys become the progress-bar and
``results.csv`` columns).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from ultralytics.utils import LOGGER
from ultralytics.utils.metrics import bbox_iou

#: YOLOv5 v6.0 "scratch-low" loss hyperparameters (before :func:`scale_hyp_for_model`).
DEFAULT_HYP: dict[str, float] = {
    "box": 0.05,
    "obj": 1.0,
    "cls": 0.5,
    "cls_pw": 1.0,
    "obj_pw": 1.0,
    "anchor_t": 4.0,
    "fl_gamma": 0.0,
    "label_smoothing": 0.0,
}

#: Names of the loss components, in the order of :meth:`ComputeLoss.compute`'s items tensor.
LOSS_NAMES: tuple[str, str, str] = ("box_loss", "obj_loss", "cls_loss")

#: Objectness weight of each output level, from the highest-resolution level down.
_BALANCE_3_LEVELS = (4.0, 1.0, 0.4)
_BALANCE_OTHER = (4.0, 1.0, 0.25, 0.06, 0.02)

#: Candidate cells of a target, as (dx, dy) offsets from the cell holding its centre: centre, left, up, right, down.
_CELL_OFFSETS = ((0, 0), (-1, 0), (0, -1), (1, 0), (0, 1))


# ---------------------------------------------------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------------------------------------------------
def _lookup(source: Any, key: str) -> Any:
    """Return ``source[key]`` for a mapping or ``source.key`` for an object; ``None`` when absent."""
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(key)
    return getattr(source, key, None)  # IterableSimpleNamespace raises AttributeError -> None


def read_hyp(source: Any) -> dict[str, float]:
    """Collect the loss hyperparameters from a dict or attribute object, filling missing keys from ``DEFAULT_HYP``.

    Raises:
        ValueError: on values that would silently break training (non-positive BCE pos_weight, ``anchor_t <= 1``,
            label smoothing outside [0, 1), negative focal gamma).
    """
    hyp = {}
    for key, default in DEFAULT_HYP.items():
        value = _lookup(source, key)
        hyp[key] = float(default if value is None else value)

    for key in ("cls_pw", "obj_pw"):
        if hyp[key] <= 0:
            raise ValueError(
                f"hyp '{key}' must be > 0 (it is YOLOv5's BCE pos_weight), got {hyp[key]}. Note that Ultralytics' own "
                f"'cls_pw' means a class-weight power (default 0.0): give the YOLOv5 hyperparameters as `model.hyp`."
            )
    if hyp["anchor_t"] <= 1:
        raise ValueError(f"hyp 'anchor_t' must be > 1 (anchor/target size-ratio limit), got {hyp['anchor_t']}")
    if not 0 <= hyp["label_smoothing"] < 1:
        raise ValueError(f"hyp 'label_smoothing' must be in [0, 1), got {hyp['label_smoothing']}")
    if hyp["fl_gamma"] < 0:
        raise ValueError(f"hyp 'fl_gamma' must be >= 0 (0 disables focal loss), got {hyp['fl_gamma']}")
    if hyp["box"] > 1:
        LOGGER.warning(
            f"hyp 'box'={hyp['box']} is unusually large for YOLOv5 (default 0.05); Ultralytics' own box gain "
            f"(7.5) has a different scale. Check the hyperparameters given to the model."
        )
    return hyp


def scale_hyp_for_model(hyp: Any, nl: int, nc: int, imgsz: int) -> dict[str, float]:
    """Return a copy of ``hyp`` with YOLOv5 v6.0's train-start gain scaling applied.

    ``box *= 3 / nl``, ``cls *= nc / 80 * 3 / nl``, ``obj *= (imgsz / 640) ** 2 * 3 / nl``. Call this exactly once,
    at train start; :class:`ComputeLoss` does not scale again. Other keys of ``hyp`` are copied unchanged.

    Args:
        hyp: dict or attribute object with at least the keys of ``DEFAULT_HYP`` that differ from the defaults.
        nl: number of detection levels (``Detect.nl``).
        nc: number of classes.
        imgsz: training image size in pixels.
    """
    if isinstance(hyp, Mapping):
        out = dict(hyp)
    else:
        out = dict(vars(hyp)) if hasattr(hyp, "__dict__") else {}
    for key, default in DEFAULT_HYP.items():
        if out.get(key) is None:
            out[key] = default
    level_factor = 3.0 / nl
    out["box"] = float(out["box"]) * level_factor
    out["cls"] = float(out["cls"]) * nc / 80.0 * level_factor
    out["obj"] = float(out["obj"]) * (imgsz / 640.0) ** 2 * level_factor
    return out


def level_balance(nl: int) -> list[float]:
    """Objectness weight per level: ``[4, 1, 0.4]`` for 3 levels, otherwise a prefix of ``[4, 1, 0.25, 0.06, 0.02]``."""
    if nl == 3:
        return list(_BALANCE_3_LEVELS)
    if not 1 <= nl <= len(_BALANCE_OTHER):
        raise ValueError(f"YOLOv5 loss supports 1 to {len(_BALANCE_OTHER)} detection levels, got nl={nl}")
    return list(_BALANCE_OTHER[:nl])


def smooth_bce(eps: float = 0.0) -> tuple[float, float]:
    """Return the (positive, negative) BCE targets for label smoothing ``eps``: ``(1 - eps / 2, eps / 2)``."""
    return 1.0 - 0.5 * eps, 0.5 * eps


# ---------------------------------------------------------------------------------------------------------------------
# Elementwise losses
# ---------------------------------------------------------------------------------------------------------------------
def bce_with_logits(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: float = 1.0, gamma: float = 0.0, alpha: float = 0.25
) -> torch.Tensor:
    """Mean binary cross-entropy on logits, optionally wrapped in a focal loss.

    With ``gamma > 0`` every element's BCE (including ``pos_weight``) is multiplied by
    ``alpha_t * (1 - p_t) ** gamma`` where ``p_t = t * p + (1 - t) * (1 - p)`` and
    ``alpha_t = t * alpha + (1 - t) * (1 - alpha)``.
    """
    weight = torch.tensor([pos_weight], device=logits.device, dtype=logits.dtype)
    loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weight, reduction="none")
    if gamma > 0:
        p = logits.sigmoid()
        p_t = target * p + (1 - target) * (1 - p)
        alpha_t = target * alpha + (1 - target) * (1 - alpha)
        loss = loss * alpha_t * (1.0 - p_t) ** gamma
    return loss.mean()


# ---------------------------------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------------------------------
def targets_from_batch(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Convert an Ultralytics batch dict to YOLOv5's ``(n, 6)`` targets ``[image, class, x, y, w, h]`` (normalised)."""
    image = batch["batch_idx"].reshape(-1, 1).float()
    cls = batch["cls"].reshape(-1, 1).float()
    boxes = batch["bboxes"].reshape(-1, 4).float()
    return torch.cat((image, cls.to(image.device), boxes.to(image.device)), 1)


class LevelTargets(NamedTuple):
    """Assignments of one output level; row ``k`` describes one (target, anchor, cell) triple."""

    image: torch.Tensor  # (n,) long, image index in the batch
    anchor: torch.Tensor  # (n,) long, anchor index within the level
    gj: torch.Tensor  # (n,) long, cell row
    gi: torch.Tensor  # (n,) long, cell column
    tbox: torch.Tensor  # (n, 4) target x, y relative to the cell's top-left corner, and w, h (grid units)
    cls: torch.Tensor  # (n,) long, class index
    anchor_wh: torch.Tensor  # (n, 2) anchor w, h (grid units)


def assign_level(
    targets: torch.Tensor, anchors: torch.Tensor, grid_hw: tuple[int, int], anchor_t: float
) -> LevelTargets:
    """Assign targets to (anchor, cell) pairs of one level, following YOLOv5 v6.0.

    Args:
        targets: ``(nt, 6)`` ``[image, class, x, y, w, h]`` with normalised xywh.
        anchors: ``(na, 2)`` anchor w, h in grid (stride) units.
        grid_hw: ``(ny, nx)`` of the level.
        anchor_t: size-ratio limit for matching a target to an anchor.

    Note:
        A centre lying exactly on a cell border (fraction 0) gets only the left/up neighbour; YOLOv5 v6.0 also adds a
        duplicate of the centre cell there. Targets are relative to the cell actually used (after clamping a centre
        lying exactly on the far border into the grid).
    """
    ny, nx = grid_hw
    device = targets.device
    grid_size = torch.tensor([nx, ny], device=device, dtype=targets.dtype)
    xy = targets[:, 2:4] * grid_size
    wh = targets[:, 4:6] * grid_size

    # Anchor matching by width/height ratio.
    ratio = wh[None] / anchors[:, None]  # (na, nt, 2)
    matched = torch.max(ratio, 1 / ratio).amax(2) < anchor_t  # (na, nt)
    anchor_idx, target_idx = matched.nonzero(as_tuple=True)
    xy, wh = xy[target_idx], wh[target_idx]

    # Candidate cells: centre, plus the neighbour nearer to the centre along each axis.
    frac = xy - xy.floor()
    near_low = (frac < 0.5) & (xy > 1)  # left / up neighbour exists and is closer
    near_high = (frac > 0.5) & (grid_size - xy > 1)  # right / down neighbour exists and is closer
    centre = torch.ones_like(near_low[:, 0])
    use = torch.stack((centre, near_low[:, 0], near_low[:, 1], near_high[:, 0], near_high[:, 1]))  # _CELL_OFFSETS order
    which, pair = use.nonzero(as_tuple=True)  # (candidate kind, matched pair) for every cell used

    offsets = torch.tensor(_CELL_OFFSETS, device=device, dtype=targets.dtype)
    cell = xy[pair].floor() + offsets[which]
    cell[:, 0].clamp_(0, nx - 1)
    cell[:, 1].clamp_(0, ny - 1)

    rows = target_idx[pair]
    anchor = anchor_idx[pair]
    return LevelTargets(
        image=targets[rows, 0].long(),
        anchor=anchor,
        gj=cell[:, 1].long(),
        gi=cell[:, 0].long(),
        tbox=torch.cat((xy[pair] - cell, wh[pair]), 1),
        cls=targets[rows, 1].long(),
        anchor_wh=anchors[anchor],
    )


def build_targets(
    raw: Sequence[torch.Tensor], targets: torch.Tensor, anchors: torch.Tensor, anchor_t: float
) -> list[LevelTargets]:
    """Assign targets on every level; ``raw[i]`` is ``(bs, na, ny, nx, no)`` and ``anchors`` is ``(nl, na, 2)``."""
    return [assign_level(targets, anchors[i], (p.shape[2], p.shape[3]), anchor_t) for i, p in enumerate(raw)]


# ---------------------------------------------------------------------------------------------------------------------
# The criterion
# ---------------------------------------------------------------------------------------------------------------------
def _raw_outputs(preds: Any) -> list[torch.Tensor]:
    """Return the raw per-level maps from training output (a list) or validation output ``(y, raw)``."""
    if isinstance(preds, tuple) and len(preds) == 2 and isinstance(preds[1], (list, tuple)):
        return list(preds[1])
    return list(preds)


def _detect_head(model: torch.nn.Module) -> torch.nn.Module:
    """Return the model's ``Detect`` head (``model.model[-1]``)."""
    return model.model[-1]


class ComputeLoss:
    """YOLOv5 v6.0 loss: CIoU box + balanced objectness BCE + class BCE.

    A plain object (not an ``nn.Module``) so that storing it as ``model.criterion`` adds nothing to the state dict.
    Hyperparameters are read once, from ``model.hyp`` if present, else ``model.args`` (keys missing there take the
    ``DEFAULT_HYP`` values). Gains are used as given: apply :func:`scale_hyp_for_model` beforehand.

    Example:
        >>> criterion = ComputeLoss(model)
        >>> loss, items = criterion(model(batch["img"]), batch)  # items: {"box_loss": ..., "obj_loss": ..., ...}
    """

    loss_names = LOSS_NAMES

    def __init__(self, model: torch.nn.Module, autobalance: bool = False) -> None:
        """Read the head geometry and hyperparameters from ``model``."""
        model = getattr(model, "module", model)  # DDP / DataParallel
        self.det = _detect_head(model)
        source = getattr(model, "hyp", None)
        if source is None:
            source = getattr(model, "args", None)
        self.hyp = read_hyp(source)
        self.nc = int(self.det.nc)
        self.nl = int(self.det.nl)
        self.na = int(self.det.na)
        self.cp, self.cn = smooth_bce(self.hyp["label_smoothing"])
        self.balance = level_balance(self.nl)
        self.autobalance = autobalance
        strides = [float(s) for s in self.det.stride]
        self.ssi = strides.index(16.0) if autobalance and 16.0 in strides else 0  # level normalised to 1
        self.gr = 1.0  # objectness target = (1 - gr) + gr * IoU

    def __call__(
        self, preds: Any, batch: Mapping[str, torch.Tensor] | torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(total * batch_size, {"box_loss", "obj_loss", "cls_loss"})``.

        Args:
            preds: list of ``nl`` raw maps ``(bs, na, ny, nx, no)``, or the validation tuple ``(y, raw)``.
            batch: Ultralytics batch dict (``batch_idx``, ``cls``, ``bboxes``), or YOLOv5 ``(n, 6)`` targets.
        """
        targets = targets_from_batch(batch) if isinstance(batch, Mapping) else batch
        total, items = self.compute(_raw_outputs(preds), targets)
        return total, dict(zip(self.loss_names, items.unbind(0)))

    def compute(self, raw: Sequence[torch.Tensor], targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """YOLOv5-style interface: return ``(total * batch_size, items)`` with ``items = [box, obj, cls]`` detached."""
        if len(raw) != self.nl:
            raise ValueError(f"expected {self.nl} output levels from Detect, got {len(raw)}")
        device = raw[0].device
        targets = targets.to(device=device, dtype=torch.float32)
        anchors = self.det.anchors.to(device=device, dtype=torch.float32)
        assignments = build_targets(raw, targets, anchors, self.hyp["anchor_t"])

        lbox = torch.zeros(1, device=device)
        lobj = torch.zeros(1, device=device)
        lcls = torch.zeros(1, device=device)
        for i, (pi, tg) in enumerate(zip(raw, assignments)):
            box_i, cls_i, tobj = self._level_box_cls(pi, tg)
            lbox = lbox + box_i
            lcls = lcls + cls_i
            obj_i = bce_with_logits(pi[..., 4].float(), tobj, self.hyp["obj_pw"], self.hyp["fl_gamma"])
            lobj = lobj + obj_i * self.balance[i]
            if self.autobalance:
                self.balance[i] = self.balance[i] * 0.9999 + 0.0001 / max(obj_i.detach().item(), 1e-12)
        if self.autobalance:
            self.balance = [b / self.balance[self.ssi] for b in self.balance]

        lbox = lbox * self.hyp["box"]
        lobj = lobj * self.hyp["obj"]
        lcls = lcls * self.hyp["cls"]
        batch_size = raw[0].shape[0]
        return (lbox + lobj + lcls) * batch_size, torch.cat((lbox, lobj, lcls)).detach()

    def _level_box_cls(
        self, pi: torch.Tensor, tg: LevelTargets
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return one level's (box loss, class loss, objectness target map)."""
        tobj = torch.zeros(pi.shape[:4], device=pi.device, dtype=torch.float32)
        zero = torch.zeros((), device=pi.device)
        n = tg.image.numel()
        if n == 0:
            return zero, zero, tobj

        ps = pi[tg.image, tg.anchor, tg.gj, tg.gi].float()  # (n, no) predictions of the assigned cells
        pxy = ps[:, :2].sigmoid() * 2 - 0.5
        pwh = (ps[:, 2:4].sigmoid() * 2) ** 2 * tg.anchor_wh
        iou = bbox_iou(torch.cat((pxy, pwh), 1), tg.tbox, xywh=True, CIoU=True).squeeze(-1)
        box_loss = (1.0 - iou).mean()

        # Objectness target; a cell assigned several times keeps its best IoU (deterministic, unlike a plain write).
        score = (1.0 - self.gr) + self.gr * iou.detach().clamp(0)
        flat = ((tg.image * self.na + tg.anchor) * pi.shape[2] + tg.gj) * pi.shape[3] + tg.gi
        tobj.view(-1).scatter_reduce_(0, flat, score, reduce="amax")

        cls_loss = zero
        if self.nc > 1:  # a single class is fully described by objectness
            t = torch.full_like(ps[:, 5:], self.cn)
            t[torch.arange(n, device=pi.device), tg.cls] = self.cp
            cls_loss = bce_with_logits(ps[:, 5:], t, self.hyp["cls_pw"], self.hyp["fl_gamma"])
        return box_loss, cls_loss, tobj
