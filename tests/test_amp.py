"""Mixed precision: every attention module and every model YAML trains under autocast, and half inference matches fp32.

On CPU, ``torch.autocast("cpu", dtype=torch.bfloat16)`` (and float16, where this torch supports it) runs the same
casting rules as CUDA's fp16 autocast: convolutions and matmuls in low precision, reductions, norms and softmax in
float32. A module that mixes dtypes by hand (a hand-written backward, an explicit ``bmm`` on tensors of two dtypes)
fails here exactly as it would on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.attention import ATTENTION
from models.yolo import Model
from utils.engine import load_hyp, split_hyp
from utils.loss import ComputeLoss, scale_hyp_for_model

ROOT = Path(__file__).resolve().parents[1]
MODEL_YAMLS = sorted(p.name for p in (ROOT / "models").glob("*.yaml"))
TABLE2 = ["yolov5s.yaml", "yolov5s-cbam.yaml", "yolov5s-sa.yaml", "yolov5s-eca.yaml", "yolov5s-ca.yaml",
          "yolov5s-ema.yaml", "yolov5x-p2.yaml", "yolov5x-p2-cbam.yaml", "yolov5x-p2-ca.yaml", "yolov5x-p2-ema.yaml"]


def _cpu_autocast_supports(dtype: torch.dtype) -> bool:
    try:
        with torch.autocast("cpu", dtype=dtype):
            return torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == dtype
    except RuntimeError:
        return False


AMP_DTYPES = [pytest.param(d, id=str(d).split(".")[-1], marks=pytest.mark.skipif(
    not _cpu_autocast_supports(d), reason=f"this torch has no CPU autocast for {d}")) for d in (torch.bfloat16,
                                                                                                 torch.float16)]
TOLERANCE = {torch.bfloat16: 0.05, torch.float16: 0.01}  # relative, against float32 (8 and 11 mantissa bits)


def flat_grad(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in params if p.grad is not None])


def assert_close_to_fp32(grad: torch.Tensor, grad32: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    assert torch.isfinite(grad).all(), f"{what}: non-finite gradients under {dtype} autocast"
    cos = torch.nn.functional.cosine_similarity(grad.double(), grad32.double(), dim=0)
    ratio = grad.norm() / grad32.norm()
    tol = TOLERANCE[dtype]
    assert cos > 1 - tol and abs(ratio - 1) < 2 * tol, f"{what}: cos {cos:.4f}, norm {ratio:.3f}"


# ----- modules ----------------------------------------------------------------------------------------
MODULES = sorted({cls.__name__: cls for cls in ATTENTION.values()}.items())


@pytest.mark.parametrize("dtype", AMP_DTYPES)
@pytest.mark.parametrize("name, cls", MODULES, ids=[n for n, _ in MODULES])
def test_module_forward_backward_under_autocast(name, cls, dtype):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(16, 128, 3, padding=1)  # autocast runs it in low precision: the module gets its dtype
    m = cls(128).train()
    for bn in m.modules():  # BatchNorm over a few pooled vectors (SK, CoT, BAM) turns rounding into gradient noise
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.eval()
    x = torch.randn(3, 16, 13, 17)
    m(conv(x)).square().mean().backward()
    grad32 = flat_grad(list(m.parameters()) + list(conv.parameters()))
    m.zero_grad(), conv.zero_grad()
    with torch.autocast("cpu", dtype=dtype):
        h = conv(x)
        assert h.dtype == dtype
        y = m(h)
    assert y.shape == h.shape and torch.isfinite(y).all()
    y.float().square().mean().backward()
    assert_close_to_fp32(flat_grad(list(m.parameters()) + list(conv.parameters())), grad32, dtype, name)


@pytest.mark.parametrize("name, cls", MODULES, ids=[n for n, _ in MODULES])
def test_module_in_half_precision_matches_fp32(name, cls):
    torch.manual_seed(0)
    m = cls(128).eval()
    x = torch.randn(2, 128, 13, 17)
    with torch.no_grad():
        y32 = m(x)
        y16 = m.half()(x.half())
    assert y16.dtype == torch.float16
    assert torch.allclose(y16.float(), y32, rtol=1e-2, atol=1e-2 * float(y32.abs().max()))


# ----- models -----------------------------------------------------------------------------------------
def model_with_loss(cfg: str) -> tuple[Model, ComputeLoss]:
    torch.manual_seed(0)
    model = Model(ROOT / "models" / cfg, verbose=False).train()
    _, loss_hyp = split_hyp(load_hyp(ROOT / "data" / "hyps" / "hyp.scratch-low.yaml"))
    model.hyp = scale_hyp_for_model(loss_hyp, nl=model.model[-1].nl, nc=model.model[-1].nc, imgsz=64)
    for m in model.modules():  # BatchNorm on running statistics: batch statistics of one tiny image would turn
        if isinstance(m, torch.nn.BatchNorm2d):  # rounding noise into gradient noise and hide what is compared
            m.eval()
    return model, ComputeLoss(model)


IMAGES = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
TARGETS = torch.tensor([[0, 1, 0.5, 0.5, 0.3, 0.4], [0, 2, 0.3, 0.6, 0.2, 0.2], [0, 0, 0.7, 0.3, 0.1, 0.15]])


def amp_training_step(model: Model, criterion: ComputeLoss, dtype: torch.dtype | None) -> tuple[float, torch.Tensor]:
    """Forward and loss under autocast (None: float32), backward through a GradScaler as the engine does."""
    model.zero_grad(set_to_none=True)
    scaler = torch.amp.GradScaler("cpu", enabled=dtype == torch.float16)
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        loss, _ = criterion.compute(model(IMAGES), TARGETS)
    assert loss.dtype == torch.float32  # the loss itself is always computed in float32
    scaler.scale(loss).backward()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # only to let the scaler unscale the gradients
    scaler.unscale_(optimizer)
    return float(loss), flat_grad(list(model.parameters()))


# bf16 for every model YAML; fp16 (with the GradScaler doing real work) for Table 2's yolov5s rows and yolov5x-p2-ema
MODEL_CASES = [(cfg, torch.bfloat16) for cfg in MODEL_YAMLS] + [
    (cfg, torch.float16) for cfg in TABLE2 if "x-p2" not in cfg or cfg == "yolov5x-p2-ema.yaml"]


@pytest.mark.parametrize("cfg, dtype", MODEL_CASES, ids=[f"{c}-{str(d).split('.')[-1]}" for c, d in MODEL_CASES])
def test_models_train_under_autocast_with_grad_scaler(cfg, dtype):
    if not _cpu_autocast_supports(dtype):
        pytest.skip(f"this torch has no CPU autocast for {dtype}")
    model, criterion = model_with_loss(cfg)
    loss32, grad32 = amp_training_step(model, criterion, None)
    loss, grad = amp_training_step(model, criterion, dtype)
    assert abs(loss - loss32) < TOLERANCE[dtype] * loss32
    assert_close_to_fp32(grad, grad32, dtype, cfg)


@pytest.mark.parametrize("cfg", ["yolov5s-ema.yaml", "yolov5s-cbam.yaml", "yolov5s-sa.yaml"])
def test_half_model_predicts_like_fp32(cfg):
    """``model.half()`` (val.py/detect.py --half): the same boxes and scores within fp16 tolerance."""
    model, _ = model_with_loss(cfg)
    model.eval().fuse()
    with torch.no_grad():
        y32 = model(IMAGES)[0]
        y16 = model.half()(IMAGES.half())[0]
    assert y16.dtype == torch.float16
    boxes, boxes16 = y32[:, :4], y16[:, :4].float()
    assert (boxes16 - boxes).abs().max() < 0.5  # pixels, on a 64x64 image
    assert (y16[:, 4:].float() - y32[:, 4:]).abs().max() < 2e-3  # class scores (probabilities)
