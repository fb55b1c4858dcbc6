"""Attention modules: shapes, gradients, errors, and agreement with straightforward re-statements of each formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from models.attention import ATTENTION, CA, CBAM, ECA, EMA, SA, SE, build_attention, eca_kernel_size

torch.manual_seed(0)


def randomize(module: torch.nn.Module) -> torch.nn.Module:
    """Give every parameter and BN statistic a random value, so an identity-like init cannot hide a bug."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
    return module.eval()


def hardswish(x):
    return x * torch.clamp(x + 3, 0, 6) / 6


def channel_norm(y, weight, bias, eps):
    """GroupNorm with one channel per group: normalise each channel over its own pixels."""
    mu = y.mean((-2, -1), keepdim=True)
    var = ((y - mu) ** 2).mean((-2, -1), keepdim=True)
    return (y - mu) / torch.sqrt(var + eps) * weight[:, None, None] + bias[:, None, None]


def conv2d_loops(x, weight, bias=None):
    """'Same'-padded stride-1 convolution of one image (C, H, W) by explicit sums over kernel offsets."""
    co, ci, kh, kw = weight.shape
    _, h, w = x.shape
    xp = torch.zeros(ci, h + kh - 1, w + kw - 1, dtype=x.dtype)
    xp[:, kh // 2: kh // 2 + h, kw // 2: kw // 2 + w] = x
    out = torch.zeros(co, h, w, dtype=x.dtype)
    for o in range(co):
        for i in range(kh):
            for j in range(kw):
                out[o] += (weight[o, :, i, j, None, None] * xp[:, i:i + h, j:j + w]).sum(0)
        if bias is not None:
            out[o] += bias[o]
    return out


def ema_reference(m: EMA, x):
    b, C, h, w = x.shape
    G, c = m.groups, C // m.groups
    W1, b1 = m.conv1x1.weight[:, :, 0, 0], m.conv1x1.bias
    out = torch.empty_like(x)
    for n in range(b):
        for g in range(G):
            xg = x[n, g * c:(g + 1) * c]
            gate_h = torch.sigmoid(W1 @ xg.mean(2) + b1[:, None])  # (c, h): pooled along W
            gate_w = torch.sigmoid(W1 @ xg.mean(1) + b1[:, None])  # (c, w): pooled along H
            x1 = channel_norm(xg * gate_h[:, :, None] * gate_w[:, None, :], m.gn.weight, m.gn.bias, m.gn.eps)
            x2 = conv2d_loops(xg, m.conv3x3.weight, m.conv3x3.bias)
            a1 = torch.softmax(x1.mean((1, 2)), 0)
            a2 = torch.softmax(x2.mean((1, 2)), 0)
            weight_map = (a1[:, None, None] * x2).sum(0) + (a2[:, None, None] * x1).sum(0)
            out[n, g * c:(g + 1) * c] = xg * torch.sigmoid(weight_map)
    return out


def ca_reference(m: CA, x):
    b, C, h, w = x.shape
    W1, b1 = m.conv1.weight[:, :, 0, 0], m.conv1.bias
    bn = m.bn1
    out = torch.empty_like(x)
    for n in range(b):
        pooled = torch.cat((x[n].mean(2), x[n].mean(1)), 1)  # (C, h + w)
        z = W1 @ pooled + b1[:, None]
        z = (z - bn.running_mean[:, None]) / torch.sqrt(bn.running_var[:, None] + bn.eps) * bn.weight[:, None] + bn.bias[:, None]
        z = hardswish(z)
        a_h = torch.sigmoid(m.conv_h.weight[:, :, 0, 0] @ z[:, :h] + m.conv_h.bias[:, None])  # (C, h)
        a_w = torch.sigmoid(m.conv_w.weight[:, :, 0, 0] @ z[:, h:] + m.conv_w.bias[:, None])  # (C, w)
        out[n] = x[n] * a_h[:, :, None] * a_w[:, None, :]
    return out


def cbam_reference(m: CBAM, x):
    W1 = m.channel_attention.fc1.weight[:, :, 0, 0]
    W2 = m.channel_attention.fc2.weight[:, :, 0, 0]
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        avg, mx = x[n].mean((1, 2)), x[n].flatten(1).max(1).values
        gate = torch.sigmoid(W2 @ torch.relu(W1 @ avg) + W2 @ torch.relu(W1 @ mx))
        y = x[n] * gate[:, None, None]
        maps = torch.stack((y.mean(0), y.max(0).values))
        out[n] = y * torch.sigmoid(conv2d_loops(maps, m.spatial_attention.conv.weight))[0]
    return out


def sa_reference(m: SA, x):
    b, C, h, w = x.shape
    G = m.groups
    cg, half = C // G, C // (2 * G)
    grouped = torch.empty_like(x)
    for n in range(b):
        for g in range(G):
            xc = x[n, g * cg: g * cg + half]
            xs = x[n, g * cg + half: (g + 1) * cg]
            cw, cb = m.cweight.view(-1), m.cbias.view(-1)
            sw, sb = m.sweight.view(-1), m.sbias.view(-1)
            gate_c = torch.sigmoid(cw * xc.mean((1, 2)) + cb)
            yc = xc * gate_c[:, None, None]
            ys = xs * torch.sigmoid(sw[:, None, None] * channel_norm(xs, m.gn.weight, m.gn.bias, m.gn.eps) + sb[:, None, None])
            grouped[n, g * cg: g * cg + half] = yc
            grouped[n, g * cg + half: (g + 1) * cg] = ys
    out = torch.empty_like(x)
    for k in range(C):  # channel shuffle with 2 groups: output 2j + i <- input i * C/2 + j
        i, j = k % 2, k // 2
        out[:, k] = grouped[:, i * (C // 2) + j]
    return out


def eca_reference(m: ECA, x):
    wk = m.conv.weight.view(-1)
    k = wk.numel()
    b, C = x.shape[:2]
    out = torch.empty_like(x)
    for n in range(b):
        avg = x[n].mean((1, 2))
        y = torch.zeros(C, dtype=x.dtype)
        for c in range(C):
            for t in range(k):
                src = c + t - k // 2
                if 0 <= src < C:
                    y[c] += wk[t] * avg[src]
        out[n] = x[n] * torch.sigmoid(y)[:, None, None]
    return out


def se_reference(m: SE, x):
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        z = torch.relu(m.fc1.weight[:, :, 0, 0] @ x[n].mean((1, 2)) + m.fc1.bias)
        gate = torch.sigmoid(m.fc2.weight[:, :, 0, 0] @ z + m.fc2.bias)
        out[n] = x[n] * gate[:, None, None]
    return out


CASES = [
    (EMA, {"factor": 8}, ema_reference),
    (CA, {}, ca_reference),
    (CBAM, {"ratio": 8}, cbam_reference),
    (SA, {"groups": 8}, sa_reference),
    (ECA, {}, eca_reference),
    (SE, {"ratio": 8}, se_reference),
]


@pytest.mark.parametrize("cls, kwargs, reference", CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_matches_reference_formula(cls, kwargs, reference):
    m = randomize(cls(64, **kwargs)).double()
    x = torch.randn(2, 64, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(m(x), reference(m, x), atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("name", ["EMA", "CA", "CBAM", "SA", "ECA", "SE"])
@pytest.mark.parametrize("batch", [1, 3])
def test_shape_and_gradients_at_odd_sizes(name, batch):
    m = build_attention(name, 128).train()
    x = torch.randn(batch, 128, 13, 17, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in m.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("c, expected", [(256, 672), (512, 2624)])
def test_ema_parameter_formula(c, expected):
    g = 32
    cg = c // g
    assert (cg * cg + cg) + (9 * cg * cg + cg) + 2 * cg == expected
    assert sum(p.numel() for p in EMA(c).parameters()) == expected


def test_default_options_match_table2():
    assert EMA(256).groups == 32
    assert CA(256).conv1.out_channels == 8 and CA(512).conv1.out_channels == 16 and CA(64).conv1.out_channels == 8
    cbam = CBAM(256)
    assert cbam.channel_attention.fc1.out_channels == 16 and cbam.spatial_attention.conv.kernel_size == (7, 7)
    assert SA(256).groups == 64 and sum(p.numel() for p in SA(256).parameters()) == 6 * 256 // 128
    assert ECA(256).conv.kernel_size == (5,) and ECA(64).conv.kernel_size == (3,)


@pytest.mark.parametrize("c, k", [(16, 3), (32, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_eca_adaptive_kernel(c, k):
    t = int(abs(math.log2(c) + 1) / 2)
    assert eca_kernel_size(c) == k == (t if t % 2 else t + 1)


@pytest.mark.parametrize("cls, c, kwargs, words", [
    (EMA, 48, {}, "48 input channels"),
    (EMA, 16, {}, "multiple of 32"),
    (SA, 96, {}, "multiple of 128"),
    (CBAM, 8, {}, "ratio"),
    (SE, 8, {}, "ratio"),
    (ECA, 64, {"k_size": 4}, "odd"),
])
def test_bad_channels_raise_clear_error(cls, c, kwargs, words):
    with pytest.raises(ValueError, match=words):
        cls(c, **kwargs)


def test_registry_picks_modules_by_name():
    assert isinstance(build_attention("ema", 64, 8), EMA)
    assert isinstance(build_attention("CoordAtt", 64), CA)
    assert ATTENTION["ShuffleAttention"] is SA
    with pytest.raises(ValueError, match="unknown attention module 'NotAThing'"):
        build_attention("NotAThing", 64)


@pytest.mark.parametrize("name", ["EMA", "CA", "CBAM", "SA", "ECA", "SE"])
def test_modules_trace_and_export_friendly(name):
    """No adaptive pooling with None sizes and no shape branching: a trace at one size runs at another."""
    m = build_attention(name, 128).eval()
    traced = torch.jit.trace(m, torch.randn(1, 128, 8, 8))
    x = torch.randn(2, 128, 11, 5)
    assert torch.allclose(traced(x), m(x), atol=1e-6)
    assert not any(isinstance(s, (torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveMaxPool2d)) for s in m.modules())


def test_ema_groups_independent():
    """Changing one group's channels must not change another group's output (groups are folded into the batch)."""
    m = EMA(64, factor=8).eval()
    x = torch.randn(1, 64, 6, 6)
    x2 = x.clone()
    x2[:, :8] += 1.0
    with torch.no_grad():
        d = (m(x) - m(x2)).abs()
    assert d[:, :8].max() > 1e-3 and d[:, 8:].max() == 0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the TorchScript-based exporter, which export.py uses
@pytest.mark.parametrize("name", ["EMA", "CA", "CBAM", "SA", "ECA", "SE"])
def test_modules_export_to_onnx_with_dynamic_shapes(name, tmp_path):
    import onnxruntime as ort

    m = randomize(build_attention(name, 128)).eval()
    f = tmp_path / f"{name}.onnx"
    torch.onnx.export(m, torch.randn(1, 128, 8, 8), str(f), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}}, dynamo=False)
    session = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    for shape in [(1, 128, 8, 8), (3, 128, 13, 7)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            assert torch.allclose(torch.from_numpy(session.run(None, {"x": x.numpy()})[0]), m(x), atol=1e-4)

