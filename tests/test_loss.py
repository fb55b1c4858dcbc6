"""Tests of utils/loss.py: YOLOv5 v6.0 target assignment, loss terms, and the Ultralytics criterion contract."""

from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.engine.trainer import BaseTrainer
from ultralytics.nn.tasks import BaseModel
from ultralytics.utils import IterableSimpleNamespace

from models.yolo import Model
from tests.helpers import COCO_ANCHORS, StubDetect, StubModel
from utils.loss import (
    DEFAULT_HYP,
    LOSS_NAMES,
    ComputeLoss,
    assign_level,
    bce_with_logits,
    build_targets,
    level_balance,
    read_hyp,
    scale_hyp_for_model,
    targets_from_batch,
)

P2_ANCHORS = ((5, 6, 8, 14, 15, 11),) + COCO_ANCHORS


def make_model(hyp_overrides=None, **det_kwargs) -> StubModel:
    hyp = dict(DEFAULT_HYP)
    hyp.update(hyp_overrides or {})
    return StubModel(hyp, **det_kwargs)


def random_raw(model: StubModel, bs: int = 2, imgsz=(64, 64), seed: int = 0, requires_grad=False) -> list:
    det = model.model[-1]
    g = torch.Generator().manual_seed(seed)
    h, w = imgsz
    return [
        torch.randn(bs, det.na, h // int(s), w // int(s), det.no, generator=g).requires_grad_(requires_grad)
        for s in det.stride
    ]


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# ---------------------------------------------------------------------------------------------------------------------
# Independent, loop-based restatement of YOLOv5's assignment and loss (the reference)
# ---------------------------------------------------------------------------------------------------------------------
def reference_assign(targets, anchors, ny, nx, anchor_t):
    """Return a list of (image, anchor, gj, gi, cls, tx, ty, tw, th) by looping over targets and anchors."""
    out = []
    for b, c, x, y, w, h in targets.tolist():
        gx, gy, gw, gh = x * nx, y * ny, w * nx, h * ny
        for a, (aw, ah) in enumerate(anchors.tolist()):
            rw, rh = gw / aw, gh / ah
            if max(rw, 1 / rw, rh, 1 / rh) >= anchor_t:
                continue
            ci, cj = int(gx), int(gy)
            cells = [(ci, cj)]
            if gx - ci < 0.5 and gx > 1:
                cells.append((ci - 1, cj))
            elif gx - ci > 0.5 and gx < nx - 1:
                cells.append((ci + 1, cj))
            if gy - cj < 0.5 and gy > 1:
                cells.append((ci, cj - 1))
            elif gy - cj > 0.5 and gy < ny - 1:
                cells.append((ci, cj + 1))
            for i, j in cells:
                out.append((int(b), a, j, i, int(c), gx - i, gy - j, gw, gh))
    return out


def rounded(rows, nd=4):
    return Counter(tuple(round(v, nd) if isinstance(v, float) else v for v in r) for r in rows)


def level_rows(lt) -> list:
    return [
        (int(b), int(a), int(j), int(i), int(c), *[float(v) for v in box])
        for b, a, j, i, c, box in zip(lt.image, lt.anchor, lt.gj, lt.gi, lt.cls, lt.tbox)
    ]


def ciou_reference(b1, b2) -> float:
    """CIoU of two xywh boxes, written out from the definition (Zheng et al. 2020)."""
    x1, y1, w1, h1 = b1
    x2, y2, w2, h2 = b2
    iw = max(0.0, min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2))
    ih = max(0.0, min(y1 + h1 / 2, y2 + h2 / 2) - max(y1 - h1 / 2, y2 - h2 / 2))
    inter = iw * ih
    iou = inter / (w1 * h1 + w2 * h2 - inter)
    cw = max(x1 + w1 / 2, x2 + w2 / 2) - min(x1 - w1 / 2, x2 - w2 / 2)
    ch = max(y1 + h1 / 2, y2 + h2 / 2) - min(y1 - h1 / 2, y2 - h2 / 2)
    rho2 = (x1 - x2) ** 2 + (y1 - y2) ** 2
    v = 4 / math.pi**2 * (math.atan(w2 / h2) - math.atan(w1 / h1)) ** 2
    alpha = v / (1 - iou + v)
    return iou - rho2 / (cw**2 + ch**2) - alpha * v


def reference_loss(raw, targets, model) -> tuple[float, float, float]:
    """Loop-based YOLOv5 loss (box, obj, cls) with gains, using reference_assign."""
    det, hyp = model.model[-1], read_hyp(model.hyp)
    cp, cn = 1 - hyp["label_smoothing"] / 2, hyp["label_smoothing"] / 2
    balance = level_balance(det.nl)
    lbox = lobj = lcls = 0.0
    for lvl, p in enumerate(raw):
        p = p.detach().double()
        _, _, ny, nx, _ = p.shape
        anchors = det.anchors[lvl]
        rows = reference_assign(targets, anchors, ny, nx, hyp["anchor_t"])
        tobj = torch.zeros(p.shape[:4], dtype=torch.float64)
        if rows:
            box_terms, cls_terms = [], []
            for b, a, j, i, c, tx, ty, tw, th in rows:
                ps = p[b, a, j, i]
                px, py = (2 * ps[:2].sigmoid() - 0.5).tolist()
                pw, ph = ((2 * ps[2:4].sigmoid()) ** 2 * anchors[a].double()).tolist()
                ciou = ciou_reference((px, py, pw, ph), (tx, ty, tw, th))
                box_terms.append(1 - ciou)
                tobj[b, a, j, i] = max(tobj[b, a, j, i].item(), max(ciou, 0.0))
                t = torch.full((det.nc,), cn, dtype=torch.float64)
                t[c] = cp
                cls_terms.append(F.binary_cross_entropy_with_logits(ps[5:], t, reduction="sum").item())
            lbox += sum(box_terms) / len(box_terms)
            if det.nc > 1:
                lcls += sum(cls_terms) / (len(cls_terms) * det.nc)
        lobj += balance[lvl] * F.binary_cross_entropy_with_logits(p[..., 4], tobj).item()
    return lbox * hyp["box"], lobj * hyp["obj"], lcls * hyp["cls"]


def random_targets(bs: int, n: int, seed: int, nc: int = 80) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, bs, (n, 1), generator=g).float()
    cls = torch.randint(0, nc, (n, 1), generator=g).float()
    wh = torch.rand(n, 2, generator=g) * 0.6 + 0.02
    xy = torch.rand(n, 2, generator=g)
    return torch.cat((image, cls, xy, wh), 1)


def as_batch(targets: torch.Tensor, bs: int, imgsz=(64, 64)) -> dict:
    return {
        "batch_idx": targets[:, 0].clone(),
        "cls": targets[:, 1:2].clone(),
        "bboxes": targets[:, 2:6].clone(),
        "img": torch.zeros(bs, 3, *imgsz),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Assignment
# ---------------------------------------------------------------------------------------------------------------------
ONE_LEVEL_ANCHORS = torch.tensor([[1.0, 1.0], [2.0, 2.0], [8.0, 8.0]])  # grid units


def one_target(gx, gy, gw=1.5, gh=1.5, n=8, cls=1.0, image=0.0) -> torch.Tensor:
    return torch.tensor([[image, cls, gx / n, gy / n, gw / n, gh / n]])


def test_assignment_hand_case_centre_and_two_neighbours():
    # centre (3.3, 5.7): x fraction 0.3 -> left neighbour, y fraction 0.7 -> lower neighbour.
    # size 1.5: ratios 1.5, 1.33 to anchors 1 and 2 (matched); 5.33 to anchor 8 (> anchor_t 4, not matched).
    lt = assign_level(one_target(3.3, 5.7), ONE_LEVEL_ANCHORS, (8, 8), anchor_t=4.0)
    got = rounded(level_rows(lt))
    expected = Counter()
    for a in (0, 1):
        expected[(0, a, 5, 3, 1, 0.3, 0.7, 1.5, 1.5)] += 1  # centre cell (gi=3, gj=5)
        expected[(0, a, 5, 2, 1, 1.3, 0.7, 1.5, 1.5)] += 1  # left neighbour
        expected[(0, a, 6, 3, 1, 0.3, -0.3, 1.5, 1.5)] += 1  # lower neighbour
    assert got == expected
    assert torch.equal(lt.anchor_wh, ONE_LEVEL_ANCHORS[lt.anchor])


def test_assignment_right_and_upper_neighbours():
    lt = assign_level(one_target(4.8, 2.2), ONE_LEVEL_ANCHORS, (8, 8), anchor_t=4.0)
    cells = {(int(j), int(i)) for j, i in zip(lt.gj, lt.gi)}
    assert cells == {(2, 4), (2, 5), (1, 4)}  # centre, right, up


@pytest.mark.parametrize(
    "gx, gy, cells",
    [
        (0.3, 0.3, {(0, 0)}),  # left/up neighbours would be off the grid
        (7.8, 7.8, {(7, 7)}),  # right/down neighbours would be off the grid
        (0.7, 7.2, {(7, 0), (7, 1), (6, 0)}),  # right and up are inside
        (1.2, 6.9, {(6, 1), (6, 0), (7, 1)}),  # left (gx > 1) and down (gy < ny - 1)
    ],
)
def test_assignment_border_rules(gx, gy, cells):
    lt = assign_level(one_target(gx, gy), ONE_LEVEL_ANCHORS[:1], (8, 8), anchor_t=4.0)
    got = [(int(j), int(i)) for j, i in zip(lt.gj, lt.gi)]
    assert sorted(got) == sorted(cells)  # no duplicates either


def test_anchor_t_filter():
    # width ratio to anchor 8 is 8 / 1.5 = 5.33: matched only when anchor_t exceeds it
    assert 2 not in assign_level(one_target(3.3, 5.7), ONE_LEVEL_ANCHORS, (8, 8), 4.0).anchor.tolist()
    assert 2 in assign_level(one_target(3.3, 5.7), ONE_LEVEL_ANCHORS, (8, 8), 5.5).anchor.tolist()
    # a target 5x wider than every anchor but of matching height is not matched at all
    lt = assign_level(one_target(3.3, 5.7, gw=5.0, gh=1.0), ONE_LEVEL_ANCHORS[:1], (8, 8), 4.0)
    assert lt.image.numel() == 0


def test_assignment_matches_loop_reference_on_random_targets():
    model = make_model()
    det = model.model[-1]
    raw = random_raw(model, bs=3, imgsz=(96, 128))  # non-square grids: 12x16, 6x8, 3x4
    targets = random_targets(bs=3, n=40, seed=1)
    targets[:, 4:6] *= 0.5
    levels = build_targets(raw, targets, det.anchors, anchor_t=4.0)
    total = 0
    for lvl, (p, lt) in enumerate(zip(raw, levels)):
        ref = reference_assign(targets, det.anchors[lvl], p.shape[2], p.shape[3], 4.0)
        assert rounded(level_rows(lt)) == rounded(ref)
        total += len(ref)
    assert total > 50  # the case exercises many assignments


def test_empty_targets_assign_nothing():
    lt = assign_level(torch.zeros(0, 6), ONE_LEVEL_ANCHORS, (8, 8), 4.0)
    assert lt.image.numel() == 0 and lt.tbox.shape == (0, 4)


# ---------------------------------------------------------------------------------------------------------------------
# Loss values
# ---------------------------------------------------------------------------------------------------------------------
def test_full_loss_matches_loop_reference():
    model = make_model({"label_smoothing": 0.1}, nc=5)
    raw = random_raw(model, bs=2, imgsz=(64, 96), seed=3)
    targets = random_targets(bs=2, n=12, seed=4, nc=5)
    _, items = ComputeLoss(model).compute(raw, targets)
    assert items.tolist() == pytest.approx(reference_loss(raw, targets, model), rel=1e-4, abs=1e-6)


def test_identical_boxes_give_zero_box_loss_and_unit_objectness_target():
    model = make_model(nc=1, anchors=((8, 8, 16, 16, 64, 64),), stride=(8,))
    det = model.model[-1]
    targets = torch.tensor([[0.0, 0.0, 3.3 / 8, 5.7 / 8, 1.5 / 8, 1.2 / 8]])
    raw = [torch.full((1, 3, 8, 8, 6), -2.0)]
    lt = build_targets(raw, targets, det.anchors, 4.0)[0]
    # Invert the decoding so every assigned prediction equals its target exactly.
    sig_xy = (lt.tbox[:, :2] + 0.5) / 2
    sig_wh = (lt.tbox[:, 2:] / lt.anchor_wh).sqrt() / 2
    raw[0][lt.image, lt.anchor, lt.gj, lt.gi, :4] = torch.logit(torch.cat((sig_xy, sig_wh), 1))
    _, items = ComputeLoss(model).compute(raw, targets)
    assert items[0].item() == pytest.approx(0.0, abs=1e-5)
    assert items[2].item() == 0.0  # single class: no class loss
    n_pos, n_all = lt.image.numel(), raw[0][..., 4].numel()
    expected_obj = (n_pos * F.softplus(torch.tensor(2.0)) + (n_all - n_pos) * F.softplus(torch.tensor(-2.0))) / n_all
    assert items[1].item() == pytest.approx(4.0 * expected_obj.item(), rel=1e-4)  # single level: balance[0] = 4


def test_loss_decreases_under_optimisation():
    model = make_model(nc=3)
    raw = random_raw(model, bs=2, imgsz=(64, 64), seed=5, requires_grad=True)
    targets = random_targets(bs=2, n=6, seed=6, nc=3)
    criterion = ComputeLoss(model)
    optimizer = torch.optim.Adam(raw, lr=0.05)
    first_total, first_items = criterion(raw, targets)
    for _ in range(40):
        optimizer.zero_grad()
        total, _ = criterion(raw, targets)
        total.sum().backward()
        optimizer.step()
    last_total, last_items = criterion(raw, targets)
    assert last_total.item() < 0.5 * first_total.item()
    for name in LOSS_NAMES:
        assert last_items[name] < first_items[name]


def _cls_optimum_raw(model, targets, eps):
    """Raw maps whose class logits at assigned cells equal the smoothed targets' logits."""
    det = model.model[-1]
    raw = random_raw(model, bs=1, imgsz=(64, 64), seed=7)
    cp, cn = 1 - eps / 2, eps / 2
    for p, lt in zip(raw, build_targets(raw, targets, det.anchors, 4.0)):
        p[lt.image, lt.anchor, lt.gj, lt.gi, 5:] = logit(cn)
        p[lt.image, lt.anchor, lt.gj, lt.gi, 5 + lt.cls] = logit(cp)
        p.requires_grad_(True)
    return raw


def test_label_smoothing_sets_class_targets():
    eps = 0.2
    targets = torch.tensor([[0.0, 1.0, 0.4, 0.6, 0.3, 0.2], [0.0, 2.0, 0.7, 0.3, 0.1, 0.15]])
    cls_only = {"box": 0.0, "obj": 0.0}  # so that the total's gradient is the class loss's
    smooth_model = make_model({**cls_only, "label_smoothing": eps}, nc=4)
    raw = _cls_optimum_raw(smooth_model, targets, eps)
    total, items = ComputeLoss(smooth_model)(raw, targets)
    # at logit(target) every BCE term equals the binary entropy of its target, and H(cp) = H(cn);
    # the class loss is a sum over levels of per-level means
    cp = 1 - eps / 2
    entropy = -(cp * math.log(cp) + (1 - cp) * math.log(1 - cp))
    det = smooth_model.model[-1]
    used_levels = sum(lt.image.numel() > 0 for lt in build_targets(raw, targets, det.anchors, 4.0))
    assert used_levels == 2
    assert items["cls_loss"].item() == pytest.approx(used_levels * entropy * DEFAULT_HYP["cls"], rel=1e-5)
    # the class-loss gradient vanishes there; without smoothing (targets 1/0) it does not
    smooth_grads = torch.autograd.grad(total.sum(), raw)
    plain_total, _ = ComputeLoss(make_model(cls_only, nc=4))(raw, targets)
    plain_grads = torch.autograd.grad(plain_total.sum(), raw)
    assert max(g.abs().max().item() for g in smooth_grads) < 1e-6
    assert max(g.abs().max().item() for g in plain_grads) > 1e-3


def test_focal_loss_formula():
    x = torch.tensor([-1.0, 0.5, 2.0, 0.3])
    t = torch.tensor([0.0, 1.0, 1.0, 0.0])
    gamma, alpha = 1.5, 0.25
    p = x.sigmoid()
    expected = torch.where(
        t > 0, -torch.log(p) * alpha * (1 - p) ** gamma, -torch.log(1 - p) * (1 - alpha) * p**gamma
    ).mean()
    assert bce_with_logits(x, t, gamma=gamma, alpha=alpha).item() == pytest.approx(expected.item(), rel=1e-5)
    assert bce_with_logits(x, t).item() == pytest.approx(F.binary_cross_entropy_with_logits(x, t).item(), rel=1e-6)


def test_pos_weight_scales_positive_terms_only():
    x = torch.tensor([0.3, -0.7])
    pos, neg = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0])
    assert bce_with_logits(x, pos, pos_weight=2.5).item() == pytest.approx(2.5 * bce_with_logits(x, pos).item())
    assert bce_with_logits(x, neg, pos_weight=2.5).item() == pytest.approx(bce_with_logits(x, neg).item())


def test_focal_gamma_changes_obj_and_cls_but_not_box():
    raw = random_raw(make_model(nc=3), bs=2, seed=8)
    targets = random_targets(bs=2, n=5, seed=9, nc=3)
    _, plain = ComputeLoss(make_model(nc=3)).compute(raw, targets)
    _, focal = ComputeLoss(make_model({"fl_gamma": 1.5}, nc=3)).compute(raw, targets)
    assert focal[0].item() == pytest.approx(plain[0].item(), rel=1e-6)
    assert focal[1] < 0.75 * plain[1]  # every element is down-weighted by alpha_t * (1 - p_t)^gamma < 0.75
    assert focal[2] < 0.75 * plain[2]


@pytest.mark.parametrize(
    "anchors, stride, balance",
    [
        (COCO_ANCHORS, (8, 16, 32), [4.0, 1.0, 0.4]),
        (P2_ANCHORS, (4, 8, 16, 32), [4.0, 1.0, 0.25, 0.06]),
    ],
)
def test_level_balance_and_empty_targets(anchors, stride, balance):
    model = make_model({"obj": 0.7}, anchors=anchors, stride=stride)
    raw = random_raw(model, bs=2, imgsz=(64, 64))
    offsets = [-3.0, -1.0, 0.5, 2.0][: len(raw)]
    for p, c in zip(raw, offsets):
        p[..., 4] = c
    total, items = ComputeLoss(model)(raw, torch.zeros(0, 6))
    expected = 0.7 * sum(b * F.softplus(torch.tensor(c)).item() for b, c in zip(balance, offsets))
    assert items["box_loss"].item() == 0.0 and items["cls_loss"].item() == 0.0
    assert items["obj_loss"].item() == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(total).all()
    assert total.item() == pytest.approx(2 * expected, rel=1e-5)


def test_level_balance_values():
    assert level_balance(3) == [4.0, 1.0, 0.4]
    assert level_balance(4) == [4.0, 1.0, 0.25, 0.06]
    assert level_balance(5) == [4.0, 1.0, 0.25, 0.06, 0.02]
    with pytest.raises(ValueError, match="nl=6"):
        level_balance(6)


def test_gains_scale_items_linearly():
    raw = random_raw(make_model(), bs=2, seed=10)
    targets = random_targets(bs=2, n=8, seed=11)
    _, base = ComputeLoss(make_model()).compute(raw, targets)
    _, scaled = ComputeLoss(make_model({"box": 0.1, "obj": 3.0, "cls": 0.25})).compute(raw, targets)
    assert scaled.tolist() == pytest.approx([2 * base[0].item(), 3 * base[1].item(), 0.5 * base[2].item()], rel=1e-5)


def test_loss_reads_current_anchors():
    """Anchors changed in place after construction (AutoAnchor) are used by the next call."""
    model = make_model()
    criterion = ComputeLoss(model)
    raw = random_raw(model, bs=1, seed=12)
    targets = random_targets(bs=1, n=4, seed=13)
    _, before = criterion.compute(raw, targets)
    model.model[-1].anchors.mul_(1.7)
    _, after = criterion.compute(raw, targets)
    assert not torch.allclose(before[0], after[0])


# ---------------------------------------------------------------------------------------------------------------------
# Interfaces: batch dict vs (n, 6) targets, validation tuple, Ultralytics engine contract, hyperparameters
# ---------------------------------------------------------------------------------------------------------------------
def test_batch_dict_and_targets_paths_agree():
    model = make_model()
    raw = random_raw(model, bs=3, seed=14)
    targets = random_targets(bs=3, n=10, seed=15)
    batch = as_batch(targets, bs=3)
    assert torch.equal(targets_from_batch(batch), targets)
    criterion = ComputeLoss(model)
    t1, i1 = criterion(raw, batch)
    t2, i2 = criterion(raw, targets)
    t3, i3 = criterion((torch.zeros(3, 84, 10), raw), batch)  # validation output (y, raw)
    assert torch.equal(t1, t2) and torch.equal(t1, t3)
    assert all(torch.equal(i1[k], i2[k]) and torch.equal(i1[k], i3[k]) for k in LOSS_NAMES)


def test_return_contract_of_ultralytics_criterion():
    model = make_model()
    raw = random_raw(model, bs=4, seed=16, requires_grad=True)
    total, items = ComputeLoss(model)(raw, as_batch(random_targets(bs=4, n=9, seed=17), bs=4))
    assert total.shape == (1,) and total.requires_grad
    assert tuple(items) == ("box_loss", "obj_loss", "cls_loss")  # trainer: loss_names = tuple(loss_items)
    assert all(v.ndim == 0 and not v.requires_grad for v in items.values())
    assert total.item() == pytest.approx(4 * sum(v.item() for v in items.values()), rel=1e-6)
    trainer = SimpleNamespace(loss_names=tuple(items))
    logged = BaseTrainer.label_loss_items(trainer, items, prefix="val")
    assert list(logged) == ["val/box_loss", "val/obj_loss", "val/cls_loss"]
    assert ("%11.4g" * 3) % tuple(items.values())  # the progress bar formats the values


class EngineStubModel(BaseModel):
    """BaseModel subclass whose forward gives (bs, na, ny, nx, no) maps, to run BaseModel.loss end to end."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(StubDetect(nc=2))
        self.hyp = dict(DEFAULT_HYP)

    def forward(self, x, *args, **kwargs):
        if isinstance(x, dict):
            return self.loss(x, *args, **kwargs)
        det = self.model[-1]
        outs = []
        for conv, s in zip(det.m, det.stride):
            f = F.avg_pool2d(x[:, :1].repeat(1, 4, 1, 1), int(s))
            bs, _, ny, nx = f.shape
            outs.append(conv(f).view(bs, det.na, det.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous())
        return outs

    def init_criterion(self):
        return ComputeLoss(self)


def test_runs_through_ultralytics_basemodel_loss():
    model = EngineStubModel()
    batch = as_batch(random_targets(bs=2, n=5, seed=18, nc=2), bs=2)
    batch["img"] = torch.rand(2, 3, 64, 64)
    loss, items = model(batch)  # what the trainer does
    loss.sum().backward()
    assert model.model[-1].m[0].weight.grad is not None
    assert set(items) == set(LOSS_NAMES)
    assert not isinstance(model.criterion, nn.Module)  # adds nothing to the state dict
    assert not any(k.startswith("criterion") for k in model.state_dict())


def test_hyp_from_namespace_with_defaults_and_hyp_preferred_over_args():
    ns = IterableSimpleNamespace(box=0.07, cls=0.18, anchor_t=3.0)  # Ultralytics-style args lack obj, obj_pw, ...
    hyp = read_hyp(ns)
    assert hyp["box"] == 0.07 and hyp["cls"] == 0.18 and hyp["anchor_t"] == 3.0
    assert hyp["obj"] == DEFAULT_HYP["obj"] and hyp["obj_pw"] == DEFAULT_HYP["obj_pw"]

    model = make_model({"box": 0.02})
    model.args = IterableSimpleNamespace(box=7.5, cls_pw=0.0)
    assert ComputeLoss(model).hyp["box"] == 0.02
    del model.hyp
    with pytest.raises(ValueError, match="cls_pw"):  # Ultralytics' cls_pw=0.0 would zero the positive BCE terms
        ComputeLoss(model)


def test_scale_hyp_for_model():
    hyp = {"box": 0.05, "obj": 1.0, "cls": 0.5, "lr0": 0.01}
    scaled = scale_hyp_for_model(hyp, nl=4, nc=10, imgsz=1280)
    assert scaled["box"] == pytest.approx(0.05 * 3 / 4)
    assert scaled["cls"] == pytest.approx(0.5 * 10 / 80 * 3 / 4)
    assert scaled["obj"] == pytest.approx(1.0 * 4 * 3 / 4)
    assert scaled["lr0"] == 0.01 and scaled["anchor_t"] == DEFAULT_HYP["anchor_t"]
    assert hyp == {"box": 0.05, "obj": 1.0, "cls": 0.5, "lr0": 0.01}  # input untouched
    assert scale_hyp_for_model(IterableSimpleNamespace(**hyp), 3, 80, 640)["box"] == pytest.approx(0.05)
    # the criterion uses the (already scaled) gains as given
    assert ComputeLoss(make_model(scaled, anchors=P2_ANCHORS, stride=(4, 8, 16, 32))).hyp["box"] == scaled["box"]


def test_autobalance_normalises_to_stride_16_level():
    model = make_model()
    criterion = ComputeLoss(model, autobalance=True)
    raw = random_raw(model, bs=2, seed=19)
    criterion(raw, random_targets(bs=2, n=6, seed=20))
    assert criterion.ssi == 1 and criterion.balance[1] == pytest.approx(1.0)
    assert criterion.balance != [4.0, 1.0, 0.4]  # updated from the observed objectness losses


# ---------------------------------------------------------------------------------------------------------------------
# With the real model (models/yolo.py)
# ---------------------------------------------------------------------------------------------------------------------
def test_with_real_yolov5_model():
    model = Model("models/yolov5n.yaml", nc=3, verbose=False)
    det = model.model[-1]
    model.hyp = scale_hyp_for_model(DEFAULT_HYP, nl=det.nl, nc=3, imgsz=64)
    batch = as_batch(random_targets(bs=2, n=6, seed=21, nc=3), bs=2)
    batch["img"] = torch.rand(2, 3, 64, 64)

    model.train()
    loss, items = model(batch)  # BaseModel.loss -> init_criterion -> ComputeLoss
    loss.sum().backward()
    assert torch.isfinite(loss).all() and tuple(items) == LOSS_NAMES
    assert det.m[0].weight.grad is not None and det.m[0].weight.grad.abs().sum() > 0

    model.eval()
    with torch.no_grad():
        preds = model(batch["img"])
        val_loss, val_items = model.loss(batch, preds)  # what the validator does in training
        raw_loss, _ = ComputeLoss(model)(preds[1], batch)
    assert isinstance(preds, tuple) and torch.equal(val_loss, raw_loss)
    assert all(torch.isfinite(v) for v in val_items.values())
