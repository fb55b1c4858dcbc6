"""Independent re-statements of each attention module's paper formula, in explicit sums, loops and reshapes.

They read the module's parameters but none of its code: convolutions are sums over kernel offsets, normalisations
are written out (BatchNorm with its running statistics: compare in eval mode), pooling is explicit averaging.
``REFERENCES`` maps each module class to its re-statement.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------------
# Building blocks written out
# ----------------------------------------------------------------------------------------------------


def conv(x, c, stride=None, padding=None, dilation=None, groups=None, weight=None, bias=None):
    """``nn.Conv2d`` ``c`` applied to (b, C, H, W) as explicit sums over kernel offsets (zero padding)."""
    weight = c.weight if weight is None else weight
    bias = c.bias if bias is None and c is not None else bias
    (sh, sw), (ph, pad_w), (dh, dw) = (stride or c.stride), (padding or c.padding), (dilation or c.dilation)
    g = groups or c.groups
    b, C, H, W = x.shape
    co, cg, kh, kw = weight.shape
    xp = F.pad(x, (pad_w, pad_w, ph, ph)).reshape(b, g, cg, H + 2 * ph, W + 2 * pad_w)
    Ho, Wo = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (W + 2 * pad_w - dw * (kw - 1) - 1) // sw + 1
    wg = weight.reshape(g, co // g, cg, kh, kw)
    out = 0
    for i in range(kh):
        for j in range(kw):
            patch = xp[..., i * dh: i * dh + sh * (Ho - 1) + 1: sh, j * dw: j * dw + sw * (Wo - 1) + 1: sw]
            out = out + torch.einsum("bgchw,goc->bgohw", patch, wg[..., i, j])
    out = out.reshape(b, co, Ho, Wo)
    return out if bias is None else out + bias[:, None, None]


def conv1d(x, c):
    """``nn.Conv1d`` on (b, C, L): the 2D version on a 1-pixel-high map."""
    w4 = c.weight[:, :, None, :]
    return conv(x[:, :, None, :], None, stride=(1, c.stride[0]), padding=(0, c.padding[0]),
                dilation=(1, c.dilation[0]), groups=c.groups, weight=w4, bias=c.bias)[:, :, 0]


def pw(x, c):
    """A 1x1 convolution as a matrix product over channels."""
    y = torch.einsum("oc,bchw->bohw", c.weight[:, :, 0, 0], x)
    return y if c.bias is None else y + c.bias[:, None, None]


def bn(x, m):
    """BatchNorm with running statistics, over dimension 1."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return ((x - m.running_mean.view(shape)) / torch.sqrt(m.running_var.view(shape) + m.eps) * m.weight.view(shape)
            + m.bias.view(shape))


def gn(x, m):
    """GroupNorm: normalise each group of channels over its channels and positions."""
    b, C = x.shape[:2]
    g = x.reshape(b, m.num_groups, -1)
    mu = g.mean(-1, keepdim=True)
    var = ((g - mu) ** 2).mean(-1, keepdim=True)
    y = ((g - mu) / torch.sqrt(var + m.eps)).reshape(x.shape)
    shape = (1, C) + (1,) * (x.ndim - 2)
    return y * m.weight.view(shape) + m.bias.view(shape)


def ln_chw(x, m):
    """LayerNorm over (C, 1, 1) of a (b, C, 1, 1) tensor."""
    mu = x.mean((1, 2, 3), keepdim=True)
    var = ((x - mu) ** 2).mean((1, 2, 3), keepdim=True)
    return (x - mu) / torch.sqrt(var + m.eps) * m.weight + m.bias


def yolo_conv(x, m):
    """YOLOv5's Conv: convolution, BatchNorm, SiLU."""
    return F.silu(bn(conv(x, m.conv), m.bn))


def sigmoid(x):
    return 1 / (1 + torch.exp(-x))


def hardswish(x):
    return x * torch.clamp(x + 3, 0, 6) / 6


def softmax(x, dim):
    e = torch.exp(x - x.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


def avg_pixels(x):
    return x.mean((2, 3), keepdim=True)


# ----------------------------------------------------------------------------------------------------
# The six modules of Table 2 and SE
# ----------------------------------------------------------------------------------------------------


def ema(m, x):
    b, C, h, w = x.shape
    G, c = m.groups, C // m.groups
    W1, b1 = m.conv1x1.weight[:, :, 0, 0], m.conv1x1.bias
    out = torch.empty_like(x)
    for n in range(b):
        for g in range(G):
            xg = x[n, g * c:(g + 1) * c]
            gate_h = sigmoid(W1 @ xg.mean(2) + b1[:, None])  # (c, h): pooled along W
            gate_w = sigmoid(W1 @ xg.mean(1) + b1[:, None])  # (c, w): pooled along H
            x1 = gn((xg * gate_h[:, :, None] * gate_w[:, None, :])[None], m.gn)[0]
            x2 = conv(xg[None], m.conv3x3)[0]
            a1, a2 = softmax(x1.mean((1, 2)), 0), softmax(x2.mean((1, 2)), 0)
            weight_map = (a1[:, None, None] * x2).sum(0) + (a2[:, None, None] * x1).sum(0)
            out[n, g * c:(g + 1) * c] = xg * sigmoid(weight_map)
    return out


def ca(m, x):
    b, C, h, w = x.shape
    out = torch.empty_like(x)
    for n in range(b):
        pooled = torch.cat((x[n].mean(2), x[n].mean(1)), 1)  # (C, h + w)
        z = hardswish(bn((m.conv1.weight[:, :, 0, 0] @ pooled + m.conv1.bias[:, None])[None], m.bn1)[0])
        a_h = sigmoid(m.conv_h.weight[:, :, 0, 0] @ z[:, :h] + m.conv_h.bias[:, None])  # (C, h)
        a_w = sigmoid(m.conv_w.weight[:, :, 0, 0] @ z[:, h:] + m.conv_w.bias[:, None])  # (C, w)
        out[n] = x[n] * a_h[:, :, None] * a_w[:, None, :]
    return out


def cbam(m, x):
    W1 = m.channel_attention.fc1.weight[:, :, 0, 0]
    W2 = m.channel_attention.fc2.weight[:, :, 0, 0]
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        avg, mx = x[n].mean((1, 2)), x[n].flatten(1).max(1).values
        y = x[n] * sigmoid(W2 @ torch.relu(W1 @ avg) + W2 @ torch.relu(W1 @ mx))[:, None, None]
        maps = torch.stack((y.mean(0), y.max(0).values))[None]
        out[n] = y * sigmoid(conv(maps, m.spatial_attention.conv1))[0, 0]
    return out


def sa(m, x):
    b, C, h, w = x.shape
    G = m.groups
    cg, half = C // G, C // (2 * G)
    cw, cb, sw, sb = m.cweight.view(-1), m.cbias.view(-1), m.sweight.view(-1), m.sbias.view(-1)
    grouped = torch.empty_like(x)
    for n in range(b):
        for g in range(G):
            xc = x[n, g * cg: g * cg + half]
            xs = x[n, g * cg + half: (g + 1) * cg]
            grouped[n, g * cg: g * cg + half] = xc * sigmoid(cw * xc.mean((1, 2)) + cb)[:, None, None]
            gate_s = sigmoid(sw[:, None, None] * gn(xs[None], m.gn)[0] + sb[:, None, None])
            grouped[n, g * cg + half: (g + 1) * cg] = xs * gate_s
    out = torch.empty_like(x)
    for k in range(C):  # channel shuffle with 2 groups: output 2j + i <- input i * C/2 + j
        i, j = k % 2, k // 2
        out[:, k] = grouped[:, i * (C // 2) + j]
    return out


def eca_1d(weight, v):
    """1D convolution across a vector with zero padding: ``y[c] = sum_t w[t] v[c + t - k//2]``."""
    k, C = weight.numel(), v.numel()
    y = torch.zeros(C, dtype=v.dtype)
    for c in range(C):
        for t in range(k):
            src = c + t - k // 2
            if 0 <= src < C:
                y[c] = y[c] + weight[t] * v[src]
    return y


def eca(m, x):
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        out[n] = x[n] * sigmoid(eca_1d(m.conv.weight.view(-1), x[n].mean((1, 2))))[:, None, None]
    return out


def se(m, x):
    z = torch.relu(pw(avg_pixels(x), m.fc1))
    return x * sigmoid(pw(z, m.fc2))


def effective_se(m, x):
    z = pw(avg_pixels(x), m.fc)
    return x * torch.clamp(z / 6 + 0.5, 0, 1)


# ----------------------------------------------------------------------------------------------------
# The catalogue
# ----------------------------------------------------------------------------------------------------


def nam(m, x):
    gamma = m.bn.weight.abs()
    return x * sigmoid(bn(x, m.bn) * (gamma / gamma.sum())[:, None, None])


def simam(m, x):
    n = x.shape[2] * x.shape[3] - 1
    mu = avg_pixels(x)
    d = (x - mu) ** 2
    var = d.sum((2, 3), keepdim=True) / n
    return x * sigmoid(d / (4 * (var + m.e_lambda)) + 0.5)


def sk(m, x):
    u = [torch.relu(bn(conv(x, c[0]), c[1])) for c in m.convs]
    s = sum(u).mean((2, 3))  # (b, C)
    z = torch.relu(bn(s @ m.fc[0].weight[:, :, 0, 0].T, m.fc[1]))  # (b, d)
    C = x.shape[1]
    logits = torch.stack([z @ m.fcs.weight[i * C:(i + 1) * C, :, 0, 0].T for i in range(len(u))])  # (M, b, C)
    a = softmax(logits, 0)
    return sum(a[i][:, :, None, None] * u[i] for i in range(len(u)))


def triplet(m, x):
    def branch(plane, gate):  # plane: (b, P, A, B), pooled over P -> gate over (A, B)
        z = torch.stack((plane.max(1).values, plane.mean(1)), 1)
        return sigmoid(bn(conv(z, gate.conv), gate.bn))[:, 0]

    b, C, H, W = x.shape
    g_cw = branch(x.permute(0, 2, 1, 3), m.cw)  # (b, C, W), pooled over H
    g_hc = branch(x.permute(0, 3, 2, 1), m.hc)  # (b, H, C), pooled over W
    g_hw = branch(x, m.hw)  # (b, H, W), pooled over C
    return x * (g_cw[:, :, None, :] + g_hc.permute(0, 2, 1)[:, :, :, None] + g_hw[:, None]) / 3


def gam(m, x):
    ca_, sa_ = m.channel_attention, m.spatial_attention
    x = x * sigmoid(pw(torch.relu(pw(x, ca_[0])), ca_[2]))
    s = torch.relu(bn(conv(x, sa_[0]), sa_[1]))
    return x * sigmoid(bn(conv(s, sa_[3]), sa_[4]))


def gc(m, x):
    b, C, h, w = x.shape
    logits = pw(x, m.conv_mask).reshape(b, h * w)
    alpha = softmax(logits, 1)
    context = torch.einsum("bcp,bp->bc", x.reshape(b, C, h * w), alpha)[:, :, None, None]
    t = pw(torch.relu(ln_chw(pw(context, m.transform[0]), m.transform[1])), m.transform[3])
    return x * sigmoid(t) if m.gate else x + t


def sge(m, x):
    b, C, h, w = x.shape
    G = m.groups
    out = torch.empty_like(x)
    for g in range(G):
        xg = x[:, g * C // G:(g + 1) * C // G]
        t = (xg * avg_pixels(xg)).sum(1)  # (b, h, w): similarity of each pixel to the group's descriptor
        mu = t.mean((1, 2), keepdim=True)
        std = torch.sqrt(((t - mu) ** 2).mean((1, 2), keepdim=True))
        t = (t - mu) / (std + 1e-5) * m.weight[0, g] + m.bias[0, g]
        out[:, g * C // G:(g + 1) * C // G] = xg * sigmoid(t)[:, None]
    return out


def bam(m, x):
    c, s = m.channel_attention, m.spatial_attention
    mc = pw(torch.relu(bn(pw(avg_pixels(x), c[0]), c[1])), c[3])  # (b, C, 1, 1)
    y = torch.relu(bn(pw(x, s[0]), s[1]))
    y = torch.relu(bn(conv(y, s[3]), s[4]))
    y = torch.relu(bn(conv(y, s[6]), s[7]))
    ms = pw(y, s[9])  # (b, 1, h, w)
    return x * (1 + sigmoid(mc + ms))


def ge(m, x):
    b, C, h, w = x.shape
    e = m.extent
    if e == 0:
        g = avg_pixels(x)
    elif m.gather is None:  # average over windows of 2e - 1 pixels centred every e pixels, inside the map
        nh, nw = -(-h // e), -(-w // e)
        g = torch.empty(b, C, nh, nw, dtype=x.dtype)
        for i in range(nh):
            for j in range(nw):
                r0, r1 = max(i * e - (e - 1), 0), min(i * e + e, h)
                c0, c1 = max(j * e - (e - 1), 0), min(j * e + e, w)
                g[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean((2, 3))
    else:
        g = x
        for layer in m.gather:
            name = type(layer).__name__
            g = conv(g, layer) if name == "Conv2d" else bn(g, layer) if name == "BatchNorm2d" else torch.relu(g)
    if type(m.mlp).__name__ == "Sequential":
        g = pw(torch.relu(pw(g, m.mlp[0])), m.mlp[2])
    if e:  # nearest neighbour: output pixel y takes cell floor(y * cells / h)
        rows = [i * g.shape[2] // h for i in range(h)]
        cols = [j * g.shape[3] // w for j in range(w)]
        g = g[:, :, rows][:, :, :, cols]
    return x * sigmoid(g)


def _polarized_gates(m, x):
    b, C, h, w = x.shape
    q = softmax(pw(x, m.ch_wq).reshape(b, h * w), 1)  # (b, P)
    z = torch.einsum("bcp,bp->bc", pw(x, m.ch_wv).reshape(b, C // 2, h * w), q)[:, :, None, None]
    gate_c = sigmoid(ln_chw(pw(z, m.ch_wz), m.ln))

    def gate_s(y):
        qs = softmax(pw(y, m.sp_wq).mean((2, 3)), 1)  # (b, C/2) over channels
        return sigmoid(torch.einsum("bc,bchw->bhw", qs, pw(y, m.sp_wv)))[:, None]

    return gate_c, gate_s


def polarized(m, x):
    gate_c, gate_s = _polarized_gates(m, x)
    return x * gate_c + x * gate_s(x)


def polarized_sequential(m, x):
    gate_c, gate_s = _polarized_gates(m, x)
    y = x * gate_c
    return y * gate_s(y)


def s2(m, x):
    b, C, h, w = x.shape
    y = pw(x, m.mlp1)
    x1, x2, x3 = y[:, :C], y[:, C:2 * C], y[:, 2 * C:]

    def move(t, axis, step):  # out[i] = t[i - step], clamped at the border (the border keeps its own value)
        n = t.shape[axis]
        idx = [min(max(i - step, 0), n - 1) for i in range(n)]
        return t[:, :, idx] if axis == 2 else t[:, :, :, idx]

    def shift(t, moves):
        q = C // 4
        return torch.cat([move(t[:, k * q:(k + 1) * q], *moves[k]) for k in range(4)], 1)

    branches = [shift(x1, [(2, 1), (2, -1), (3, 1), (3, -1)]), shift(x2, [(3, 1), (3, -1), (2, 1), (2, -1)]), x3]
    a = sum(branches).sum((2, 3))  # (b, C)
    fc1, fc2 = m.split_attention[0].weight[:, :, 0, 0], m.split_attention[2].weight[:, :, 0, 0]
    hat = F.gelu(a @ fc1.T) @ fc2.T  # (b, 3C)
    bar = softmax(hat.reshape(b, 3, C), 1)
    mixed = sum(bar[:, k, :, None, None] * branches[k] for k in range(3))
    return pw(mixed, m.mlp2)


def parnet(m, x):
    s = bn(x, m.bn)
    s = s * sigmoid(pw(avg_pixels(s), m.sse))
    return F.silu(bn(conv(x, m.conv1x1[0]), m.conv1x1[1]) + bn(conv(x, m.conv3x3[0]), m.conv3x3[1]) + s)


def criss_cross(m, x):
    b, C, h, w = x.shape
    q, k, v = pw(x, m.query), pw(x, m.key), pw(x, m.value)
    out = torch.empty_like(x)
    for y in range(h):
        for xx in range(w):
            # the pixel's column without itself, then its whole row (itself included once)
            col = [yy for yy in range(h) if yy != y]
            keys = torch.cat((k[:, :, col, xx], k[:, :, y, :]), 2)  # (b, C', h - 1 + w)
            vals = torch.cat((v[:, :, col, xx], v[:, :, y, :]), 2)
            a = softmax(torch.einsum("bc,bcp->bp", q[:, :, y, xx], keys), 1)
            out[:, :, y, xx] = torch.einsum("bp,bcp->bc", a, vals)
    return x + m.gamma * out


def double_attention(m, x):
    b, C, h, w = x.shape
    A = pw(x, m.convA).reshape(b, -1, h * w)
    B = softmax(pw(x, m.convB).reshape(b, -1, h * w), 2)  # attention maps over pixels
    V = softmax(pw(x, m.convV).reshape(b, -1, h * w), 1)  # attention vectors over descriptors
    G = torch.einsum("bmp,bnp->bmn", A, B)  # gathered global descriptors
    Z = torch.einsum("bmn,bnp->bmp", G, V)  # distributed to every pixel
    return x + pw(Z.reshape(b, -1, h, w), m.conv_reconstruct)


def cot(m, x):
    b, C, h, w = x.shape
    k, p = m.kernel_size, m.kernel_size // 2
    k1 = torch.relu(bn(conv(x, m.key_embed[0]), m.key_embed[1]))
    e = m.embed
    wts = gn(pw(torch.relu(bn(pw(torch.cat((x, k1), 1), e[0]), e[1])), e[3]), e[4])
    cw = wts.shape[1] // (k * k)
    wts = wts.reshape(b, cw, k * k, h, w)
    v = F.pad(bn(pw(x, m.conv1x1[0]), m.conv1x1[1]), (p, p, p, p))
    y = torch.zeros_like(x)
    for ch in range(C):  # channel ch is aggregated with weight channel ch mod cw over its k x k window
        for i in range(k):
            for j in range(k):
                y[:, ch] = y[:, ch] + wts[:, ch % cw, i * k + j] * v[:, ch, i:i + h, j:j + w]
    k2 = F.silu(bn(y, m.bn))
    s = m.se
    g = pw(torch.relu(bn(pw(avg_pixels(k1 + k2), s[0]), s[1])), s[3])[:, :, 0, 0]  # (b, 2C)
    a = softmax(g.reshape(b, C, 2), 2)
    return k2 * a[:, :, 0, None, None] + k1 * a[:, :, 1, None, None]


def mhsa(m, x):
    b, C, h, w = x.shape
    n, d, L = m.heads, C // m.heads, m.max_offset
    P = h * w
    q, k, v = (pw(x, c).reshape(b, n, d, P) for c in (m.query, m.key, m.value))
    ys, xs = [p // w for p in range(P)], [p % w for p in range(P)]
    dy = [[min(max(ys[j] - ys[i], -L), L) + L for j in range(P)] for i in range(P)]
    dx = [[min(max(xs[j] - xs[i], -L), L) + L for j in range(P)] for i in range(P)]
    r = m.rel_h[torch.tensor(dy)] + m.rel_w[torch.tensor(dx)]  # (P, P, d): r[i, j] for query i, key j
    logits = (torch.einsum("bndi,bndj->bnij", q, k) + torch.einsum("bndi,ijd->bnij", q, r)) / math.sqrt(d)
    out = torch.einsum("bnij,bndj->bndi", softmax(logits, 3), v)
    return out.reshape(b, C, h, w)


def bot(m, x):
    return x + yolo_conv(mhsa(m.mhsa, yolo_conv(x, m.cv1)), m.cv2)


def ela(m, x):
    a_h = sigmoid(gn(conv1d(x.mean(3), m.conv), m.gn))  # (b, C, h)
    a_w = sigmoid(gn(conv1d(x.mean(2), m.conv), m.gn))  # (b, C, w)
    return x * a_h[:, :, :, None] * a_w[:, :, None, :]


def cpca(m, x):
    mlp = lambda v: pw(torch.relu(pw(v, m.fc1)), m.fc2)  # noqa: E731
    x = x * (sigmoid(mlp(avg_pixels(x))) + sigmoid(mlp(x.amax((2, 3), keepdim=True))))
    s = conv(x, m.dconv5_5)
    branches = [conv(conv(s, strip[0]), strip[1]) for strip in m.strips]
    return pw(s + sum(branches), m.conv) * x


def _bins(n_in, n_out):
    """Adaptive pooling bins: [floor(i n_in / n_out), ceil((i + 1) n_in / n_out)) for each output i."""
    return [(i * n_in // n_out, -(-(i + 1) * n_in // n_out)) for i in range(n_out)]


def _adaptive_avg(t, out_h, out_w):
    rows, cols = _bins(t.shape[2], out_h), _bins(t.shape[3], out_w)
    return torch.stack([torch.stack([t[:, :, r0:r1, c0:c1].mean((2, 3)) for c0, c1 in cols], -1)
                        for r0, r1 in rows], -2)


def mlca(m, x):
    b, C, h, w = x.shape
    s = m.local_size
    local = _adaptive_avg(x, s, s)  # (b, C, s, s)
    glob = local.mean((2, 3))  # (b, C)
    out = torch.empty_like(x)
    for n in range(b):
        seq = local[n].reshape(C, s * s).T.reshape(-1)  # cell-major, channels within a cell
        y_local = eca_1d(m.conv_local.weight.view(-1), seq).reshape(s * s, C).T.reshape(C, s, s)
        y_global = eca_1d(m.conv.weight.view(-1), glob[n])
        att = sigmoid(y_global)[:, None, None] * (1 - m.local_weight) + sigmoid(y_local) * m.local_weight
        out[n] = x[n] * _adaptive_avg(att[None], h, w)[0]
    return out


def lska(m, x):
    a = conv(conv(conv(conv(x, m.conv0h), m.conv0v), m.conv_spatial_h), m.conv_spatial_v)
    return x * pw(a, m.conv1)


def lsk_block(m, x):
    a1 = conv(x, m.conv0)
    a2 = conv(a1, m.conv_spatial)
    a1, a2 = pw(a1, m.conv1), pw(a2, m.conv2)
    both = torch.cat((a1, a2), 1)
    masks = sigmoid(conv(torch.stack((both.mean(1), both.max(1).values), 1), m.conv_squeeze))
    return x * pw(a1 * masks[:, :1] + a2 * masks[:, 1:], m.conv)


def caa(m, x):
    h, w = x.shape[2:]
    xp = F.pad(x, (3, 3, 3, 3))
    pooled = sum(xp[:, :, i:i + h, j:j + w] for i in range(7) for j in range(7)) / 49  # zeros counted
    a = yolo_conv(conv(conv(yolo_conv(pooled, m.conv1), m.h_conv), m.v_conv), m.conv2)
    return x * sigmoid(a)


def soca(m, x):
    b, C, h, w = x.shape
    M = h * w
    out = torch.empty_like(x)
    eye = torch.eye(C, dtype=x.dtype)
    for n in range(b):
        f = x[n].reshape(C, M)
        i_hat = (eye.new_ones(M, M) * -1 / M + torch.eye(M, dtype=x.dtype)) / M  # centring matrix / M
        cov = f @ i_hat @ f.T
        tr = torch.trace(cov)
        y, z = cov / tr, eye
        for _ in range(m.iterations):
            y, z = 0.5 * y @ (3 * eye - z @ y), 0.5 * (3 * eye - z @ y) @ z
        s = (y * torch.sqrt(tr)).mean(1)  # (C,)
        gate = sigmoid(pw(torch.relu(pw(s[None, :, None, None], m.conv_du[0])), m.conv_du[2]))[0]
        out[n] = x[n] * gate
    return out


def pam(m, x):
    b, C, h, w = x.shape
    q, k, v = (pw(x, c).reshape(b, -1, h * w) for c in (m.query_conv, m.key_conv, m.value_conv))
    s = softmax(torch.einsum("bci,bcj->bij", q, k), 2)  # s[i, j]: the influence of pixel j on pixel i
    return x + m.gamma * torch.einsum("bij,bcj->bci", s, v).reshape(x.shape)


def cam(m, x):
    b, C, h, w = x.shape
    f = x.reshape(b, C, h * w)
    energy = torch.einsum("bip,bjp->bij", f, f)
    s = softmax(energy.amax(2, keepdim=True) - energy, 2)
    return x + m.gamma * torch.einsum("bij,bjp->bip", s, f).reshape(x.shape)


def danet(m, x):
    return x + (pam(m.pam, x) - x) + (cam(m.cam, x) - x)
