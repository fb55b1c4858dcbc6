"""The fused C kernel of EMA's inference forward (models/ema_kernel.c) and its build/load helper (utils/native.py)."""

import logging
import os
import platform
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from models import ema_factored
from models.common import EMA
from utils import native

HAS_CC = platform.system() == "Linux" and shutil.which((shlex.split(os.environ.get("CC", "cc")) or [""])[0]) is not None


def ema(c: int, factor: int, seed: int = 0) -> EMA:
    m = EMA(c, factor).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m


@pytest.fixture
def kernel():
    if ema_factored.native_library() is None:
        assert not HAS_CC, "a C compiler is on PATH but the EMA kernel did not build (see the warning above)"
        pytest.skip("no C compiler: EMA runs its PyTorch ops")
    return lambda *args: ema_factored.native_forward(*args)[0]


def run_kernel(kernel, m: EMA, x: torch.Tensor) -> torch.Tensor:
    factor, (h, w) = m.groups, x.shape[2:]
    w3_terms = ema_factored.branch_constants(m.conv3x3.weight, m.conv3x3.bias, m.gn.bias, factor, h, w)
    return kernel(x, m.conv1x1.weight, m.conv1x1.bias, m.gn.weight, m.gn.bias, m.conv3x3.bias, *w3_terms, factor,
                  m.gn.eps)


@pytest.mark.parametrize("batch, c, factor, hw", [(1, 256, 32, (40, 40)), (1, 512, 32, (20, 20)),
                                                  (2, 64, 8, (7, 5)), (1, 64, 8, (1, 6)), (3, 32, 4, (5, 1)),
                                                  (2, 64, 8, (13, 17))])
def test_kernel_equals_the_paper_formula(kernel, batch, c, factor, hw):
    m = ema(c, factor)
    x = torch.randn(batch, c, *hw, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = run_kernel(kernel, m, x)
        assert (y - m.forward_dense(x)).abs().max() < 1e-5
        # channels_last input (AutoBackend's layout on CPU) gives the same values in the input's shape
        assert torch.equal(run_kernel(kernel, m, x.contiguous(memory_format=torch.channels_last)), y)


@pytest.mark.parametrize("spread", [1.0, 1e-2, 1e-3])
@pytest.mark.parametrize("hw", [(40, 40), (13, 17), (1, 1)])
def test_kernel_is_as_accurate_as_the_formula_on_ill_conditioned_maps(kernel, spread, hw):
    """Channels with variance << mean^2 (and 1x1 maps, variance 0): GroupNorm divides rounding noise by their
    standard deviation. Against the formula in float64, the kernel errs no more than the formula in float32."""
    m = ema(64, 8)
    x = torch.randn(2, 64, *hw, generator=torch.Generator().manual_seed(0)) * spread + 3.0
    with torch.no_grad():
        truth = m.double().forward_dense(x.double())
        formula_error = (m.float().forward_dense(x) - truth).abs().max()
        assert (run_kernel(kernel, m, x) - truth).abs().max() <= 1.5 * formula_error + 1e-6


@pytest.mark.parametrize("batch, c, factor, hw", [(2, 64, 8, (9, 11)), (1, 256, 32, (20, 20)), (3, 32, 4, (1, 5)),
                                                  (2, 32, 4, (4, 1)), (1, 32, 4, (2, 2))])
def test_kernel_gradients_equal_the_autograd_function(kernel, batch, c, factor, hw):
    """NativeEMA's C backward against FactoredEMA's PyTorch one (itself checked against finite differences)."""
    m = ema(c, factor).train()
    x = torch.randn(batch, c, *hw, generator=torch.Generator().manual_seed(0), requires_grad=True)
    g_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    inputs = [x, *m.parameters()]
    y = m.forward_factored(x)
    assert y.grad_fn.name() == "NativeEMABackward"
    grads = torch.autograd.grad(y, inputs, g_out)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ema_factored, "native_library", lambda: None)
        y_ref = m.forward_factored(x)
        assert y_ref.grad_fn.name() == "FactoredEMABackward"
        grads_ref = torch.autograd.grad(y_ref, inputs, g_out)
    assert (y - y_ref).abs().max() < 1e-5
    for (name, _), g, g_ref in zip([("x", x), *m.named_parameters()], grads, grads_ref):
        scale = max(1.0, float(g_ref.abs().max()))  # parameter gradients sum over many pixels
        assert (g - g_ref).abs().max() < 2e-5 * scale, name


def test_inference_takes_the_forward_kernel_and_other_dtypes_the_pytorch_ops(kernel, monkeypatch):
    calls = []
    forward = ema_factored.native_forward
    monkeypatch.setattr(ema_factored, "native_forward", lambda *a, **k: calls.append(a) or forward(*a, **k))
    m = ema(64, 8)
    x = torch.randn(2, 64, 9, 11)
    with torch.no_grad():
        m.forward_factored(x)
        assert len(calls) == 1
        m.double().forward_factored(x.double())
        assert len(calls) == 1


def test_without_the_kernel_ema_runs_its_pytorch_ops(monkeypatch):
    monkeypatch.setattr(ema_factored, "native_library", lambda: None)
    m = ema(64, 8)
    x = torch.randn(2, 64, 9, 11)
    with torch.no_grad():
        assert (m.forward_factored(x) - m.forward_dense(x)).abs().max() < 1e-5


@pytest.mark.skipif(not HAS_CC, reason="needs a C compiler")
def test_build_is_cached_per_source_and_failures_fall_back(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("YOLOV5_ATTENTION_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "answer.c"
    source.write_text("int answer(void) { return 42; }\n")
    lib = native.build(source)
    assert lib.parent == tmp_path / "cache" and lib.name.startswith("answer-")
    mtime = lib.stat().st_mtime_ns
    assert native.build(source) == lib and lib.stat().st_mtime_ns == mtime  # cached, not rebuilt
    assert native.load(source).answer() == 42
    source.write_text("int answer(void) { return 43; }\n")
    assert native.build(source) != lib  # an edited source gets its own build
    assert list((tmp_path / "cache").glob("*.so")) and not list((tmp_path / "cache").glob("tmp*"))

    broken = tmp_path / "broken.c"
    broken.write_text("int broken(void) { return }\n")
    with pytest.raises(RuntimeError, match="broken.c"):
        native.build(broken)
    with caplog.at_level(logging.WARNING, logger="yolov5-attention"):
        assert native.load(broken) is None
    assert "broken.c unavailable, using PyTorch ops" in caplog.text
    assert not list((tmp_path / "cache").glob("tmp*"))  # a failed build leaves no temporary file
    monkeypatch.setenv("CC", "no-such-compiler")
    with pytest.raises(RuntimeError, match="no C compiler 'no-such-compiler'"):
        native.build(Path(source))


def test_native_code_can_be_switched_off(monkeypatch, tmp_path):
    monkeypatch.setenv("YOLOV5_ATTENTION_NATIVE", "0")
    source = tmp_path / "off.c"
    source.write_text("int off(void) { return 1; }\n")
    assert native.load(source) is None
