"""EMA's factored formulation: the paper's function without its dense 3x3 convolution, forward and backward.

``models.common.EMA`` documents why the two formulations are the same function; this module runs the fast one.
``factored_ema`` dispatches:

* float32 on CPU: the C kernels of ``ema_kernel.c`` (built on first use by ``utils.native``), which do all the
  work of one group of one image in one pass while its few tens of KB sit in cache: ``native_forward`` at
  inference, ``NativeEMA`` (forward and backward kernels) under autograd. In yolov5s at 640 its two modules
  take about 0.7 ms instead of about 1.8 ms with PyTorch ops, which stream whole maps through the cache;
* everything else (CUDA, half precision, tracing, no C compiler): ``FactoredEMA``, a few reductions, one
  depthwise conv and one GroupNorm in PyTorch ops, with its gradient written out by hand (about 17 full-size
  operations where autograd through the same ops makes about 30).

Tests compare every path with the dense formula, the hand-written gradients with finite differences and the C
backward with the PyTorch one.

Shapes: the input ``x`` is ``(b, groups * c, h, w)``; inside, groups are folded into the batch: ``n = b * groups``
rows of ``c`` channels over ``p = h * w`` positions. Taps ``t = 3 * ky + kx`` of a 3x3 kernel read the input at
offset ``(ky - 1, kx - 1)``.
"""

from __future__ import annotations

import ctypes
import functools
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from utils import native


@functools.lru_cache(maxsize=64)
def window_means(h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Constants that turn an ``h x w`` map's row means, column means and corners into the mean each 3x3 tap reads.

    Tap ``(ky, kx)`` of a zero-padded 3x3 convolution reads the input shifted by ``(ky - 1, kx - 1)``: offset -1
    misses the last row (column), +1 the first, 0 nothing. So its window mean is the image mean, minus the missed
    row's and column's shares, plus their corner (subtracted twice). Returns the ``(h + w + 4, 9)`` matrix from a
    channel's features (its ``h`` row means, ``w`` column means and the corners ``[0, 0], [0, -1], [-1, 0],
    [-1, -1]``) to its nine window means, and the corners' flat positions (repeated on maps one pixel high or wide).
    """
    with torch.inference_mode(False):  # cached constants must also serve later autograd passes
        q = h + w
        to_taps = torch.zeros(q + 4, 3, 3, dtype=torch.float64)
        to_taps[:h] = 1 / h  # the image mean, from the row means
        to_taps[h - 1, 0, :] -= 1 / h  # ky = 0 misses the last row, ky = 2 the first
        to_taps[0, 2, :] -= 1 / h
        to_taps[q - 1, :, 0] -= 1 / w  # kx = 0 misses the last column, kx = 2 the first
        to_taps[h, :, 2] -= 1 / w
        corner = 1 / (h * w)  # added back where a missed row meets a missed column
        to_taps[q, 2, 2], to_taps[q + 1, 2, 0], to_taps[q + 2, 0, 2], to_taps[q + 3, 0, 0] = (corner,) * 4
        corners = torch.tensor([0, w - 1, (h - 1) * w, h * w - 1], device=device)
        return to_taps.reshape(q + 4, 9).to(device, dtype), corners


def shifted_taps(maps: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(n, 1, h * w)`` maps -> ``(n, 9, h * w)``: row ``t`` reads the map at tap ``t``'s offset (zero outside).

    The same as ``F.unfold(maps, 3, padding=1)`` on one channel, about 10x faster: one pad and one strided copy.
    """
    n = maps.shape[0]
    padded = F.pad(maps.reshape(n, h, w), (1, 1, 1, 1))
    s_n, s_h, s_w = padded.stride()
    return padded.as_strided((n, 3, 3, h, w), (s_n, s_h, s_w, s_h, s_w)).reshape(n, 9, h * w)


# id(conv3x3.weight) -> (weak reference to it, cache key, constants); an entry goes when its weight does
_CONSTANTS: dict[int, tuple[weakref.ref, tuple, tuple[torch.Tensor, ...]]] = {}


def branch_constants(w3: torch.Tensor, b3: torch.Tensor, beta: torch.Tensor, groups: int, h: int, w: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the 3x3 branch contributes, from the parameters alone: ``(mean_operator, kernel, bias)``.

    ``mean_operator`` (``(c * (h + w + 4), c)``) maps a row's features (``window_means``) to the 3x3 conv's channel
    means less its bias; ``kernel`` (``(groups * c, 1, 3, 3)``) is each input channel's ``d1``-combined 3x3 kernel
    (``d1 = softmax(beta)``, the softmax of ``x1``'s channel means), repeated for a depthwise conv over all groups,
    and ``bias`` the ``d1``-weighted conv bias shared out over each row's channels. With autograd recording they
    are computed afresh (their gradients flow to the parameters); otherwise they are cached per map size until a
    parameter changes (its version counter or storage), which saves several small operations per call.
    """
    params = w3, b3, beta
    if torch.is_grad_enabled() and any(t.requires_grad for t in params) or any(t.is_inference() for t in params):
        return _branch_constants(w3, b3, beta, groups, h, w)  # inference tensors have no version counter
    key = (h, w, groups, w3.dtype, w3.device, *((t.data_ptr(), t._version) for t in params))
    hit = _CONSTANTS.get(id(w3))
    if hit is None or hit[0]() is not w3 or hit[1] != key:
        with torch.inference_mode(False), torch.no_grad():  # cached tensors must also serve later no-grad calls
            constants = _branch_constants(w3, b3, beta, groups, h, w)
        hit = weakref.ref(w3, lambda _, i=id(w3): _CONSTANTS.pop(i, None)), key, constants
        _CONSTANTS[id(w3)] = hit
    return hit[2]


def _branch_constants(w3: torch.Tensor, b3: torch.Tensor, beta: torch.Tensor, groups: int, h: int, w: int
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    c = w3.shape[0]
    to_taps, _ = window_means(h, w, w3.device, w3.dtype)
    w3 = w3.reshape(c, c, 9)
    mean_operator = torch.einsum("ft,jkt->kfj", to_taps, w3).reshape(-1, c)
    d1 = beta.softmax(0)
    kernel = (d1 @ w3.reshape(c, c * 9)).reshape(c, 1, 3, 3).repeat(groups, 1, 1, 1)
    return mean_operator, kernel, (d1 @ b3 / c).expand(groups * c).contiguous()


def factored_ema(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                 eps: float, w3: torch.Tensor, b3: torch.Tensor, groups: int) -> torch.Tensor:
    """EMA of ``x`` (``(b, groups * c, h, w)``) from its parameters: the 1x1 conv (``w1``, ``b1``), the
    GroupNorm (``gamma``, ``beta``, ``eps``) and the 3x3 conv (``w3``, ``b3``).

    Float32 on CPU runs the fused kernels of ``ema_kernel.c`` where they could be built (``native_library``):
    ``native_forward`` at inference, ``NativeEMA`` under autograd. Everything else (CUDA, other dtypes, tracing,
    no C compiler) runs ``FactoredEMA``'s PyTorch ops.
    """
    mean_operator, kernel, bias = branch_constants(w3, b3, beta, groups, *x.shape[2:])
    args = x, w1, b1, gamma, beta, b3, mean_operator, kernel, bias, groups, eps
    if runs_native(x, w1, b1, gamma, beta, b3):
        if torch.is_grad_enabled() and any(t.requires_grad for t in (x, w1, b1, gamma, beta, b3, w3)):
            return NativeEMA.apply(*args)
        return native_forward(*args)[0]
    return FactoredEMA.apply(*args)


def runs_native(x: torch.Tensor, *params: torch.Tensor) -> bool:
    """Whether ``factored_ema`` runs the C kernels for this input and these parameters."""
    return (x.device.type == "cpu" and all(t.dtype == torch.float32 for t in (x, *params))
            and not torch.jit.is_tracing() and native_library() is not None)


@functools.lru_cache(maxsize=None)
def native_library() -> ctypes.CDLL | None:
    """``ema_kernel.c`` built and loaded (``utils.native``), or ``None`` where it cannot be built."""
    lib = native.load(Path(__file__).with_name("ema_kernel.c"))
    if lib is not None:
        pointer, c_int, c_float = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
        lib.ema_forward.argtypes = [pointer, pointer, ctypes.c_long, c_int, c_int, c_int, *[pointer] * 7, c_float,
                                    c_float, *[pointer] * 6, c_int]
        lib.ema_backward.argtypes = [*[pointer] * 4, ctypes.c_long, *[c_int] * 4, *[pointer] * 11, c_int]
        lib.ema_forward.restype = lib.ema_backward.restype = c_int
        lib.ema_grads_size.argtypes, lib.ema_grads_size.restype = [c_int] * 4, ctypes.c_long
    return lib


def _pointers(*tensors: torch.Tensor) -> list[int]:
    return [t.data_ptr() for t in tensors]


def _check(status: int, c: int, h: int, w: int) -> None:
    if status:
        raise MemoryError(f"EMA kernel: no memory for its per-thread scratch ({h}x{w} map, {c} channels)")


def native_forward(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                   b3: torch.Tensor, mean_operator: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor,
                   groups: int, eps: float, save: bool = False) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """``FactoredEMA.apply``'s output from the C kernel, and (with ``save``) what ``NativeEMA.backward`` needs:
    per row the features, gates, GroupNorm mean and 1/std, ``d2`` and the output gate ``sigmoid(z)``."""
    x = x.contiguous()
    b, ch, h, w = x.shape
    c, n, q = ch // groups, b * groups, h + w
    out = torch.empty_like(x)
    saved = tuple(x.new_empty(shape) for shape in ((n, c, q + 4), (n, c, q), (n, c), (n, c), (n, c), (n, h * w))) \
        if save else ()
    arrays = [t.detach().contiguous() for t in (w1, b1, gamma, beta, b3, mean_operator, kernel)]
    _check(native_library().ema_forward(*_pointers(x, out), n, c, h, w, *_pointers(*arrays), float(bias[0]) * c, eps,
                                        *(_pointers(*saved) if save else [None] * 6), torch.get_num_threads()), c, h, w)
    return out, saved


class NativeEMA(torch.autograd.Function):
    """``FactoredEMA`` computed by the C kernels: one fused pass per row forward and one backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                b3: torch.Tensor, mean_operator: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor, groups: int,
                eps: float) -> torch.Tensor:
        x = x.contiguous()  # once, for the kernel and for the backward
        out, saved = native_forward(x, w1, b1, gamma, beta, b3, mean_operator, kernel, bias, groups, eps, save=True)
        ctx.groups = groups
        ctx.save_for_backward(x, *(t.detach().contiguous() for t in (w1, gamma, beta, mean_operator, kernel)), *saved)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w1, gamma, beta, mean_operator, kernel, *saved = ctx.saved_tensors
        groups, (b, ch, h, w) = ctx.groups, x.shape
        c, q = ch // groups, h + w
        g_x = torch.empty_like(x)
        sizes = [c * c, c, c, c, c, c * (q + 4) * c, groups * c * 9, groups]  # the layout of ema_grads_size
        if native_library().ema_grads_size(groups, c, h, w) != sum(sizes):
            raise RuntimeError("models/ema_kernel.c lays out its parameter gradients differently from NativeEMA")
        grads, grad_out = x.new_empty(sum(sizes)), grad_out.contiguous()
        _check(native_library().ema_backward(*_pointers(x, grad_out, g_x, grads), b * groups, groups, c, h, w,
                                             *_pointers(w1, gamma, beta, mean_operator, kernel, *saved),
                                             torch.get_num_threads()), c, h, w)
        g_w1, g_b1, g_gamma, g_beta, g_b3, g_mean_operator, g_kernel, g_bias = grads.split(sizes)
        return (g_x, g_w1.view(c, c, 1, 1), g_b1, g_gamma, g_beta, g_b3, g_mean_operator.view(-1, c),
                g_kernel.view(ch, 1, 3, 3), g_bias.view(groups, 1).expand(groups, c).reshape(ch), None, None)


class FactoredEMA(torch.autograd.Function):
    """EMA's output from its input, parameters and ``branch_constants``, with a hand-written gradient.

    Forward, per row of ``c`` channels (``x2 = conv3x3(x)`` is never materialised): ``y = x * gate_h * gate_w``,
    ``x1 = GroupNorm(y)``, ``z = d1 . x2 + d2 . x1`` (channel sums weighted by the softmax descriptors) and the
    output ``x * sigmoid(z)``, where ``d1 . x2`` is one depthwise conv summed over the row's channels and
    ``d2 = softmax(mean x2)`` comes from the window means of ``x``. Few, large operations: each costs most of its
    time in cache misses when it runs inside a network, whatever its size.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                b3: torch.Tensor, mean_operator: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor, groups: int,
                eps: float) -> torch.Tensor:
        x = x.contiguous()
        b, ch, h, w = x.shape
        c, n, p, q = ch // groups, b * groups, h * w, h + w
        xg = x.view(n, c, h, w)
        # each channel's row means, column means and corners
        features = x.new_empty(n, c, q + 4)
        torch.mean(xg, 3, out=features[..., :h])
        torch.mean(xg, 2, out=features[..., h:q])
        torch.index_select(x.view(n, c, p), 2, window_means(h, w, x.device, x.dtype)[1], out=features[..., q:])
        # 1x1 branch: one shared 1x1 conv (a batched matmul) over the pooled descriptors, gates, GroupNorm
        gates = torch.baddbmm(b1.view(1, c, 1), w1.view(1, c, c).expand(n, c, c), features[..., :q]).sigmoid_()
        y = (xg * gates[..., :h, None]).mul_(gates[..., None, h:])
        x1, mean, rstd = torch.native_group_norm(y, gamma, beta, n, c, p, c, eps)
        # 3x3 branch: d2 from its channel means, its d1-weighted channel sum as a depthwise conv (d1 . b3 as bias)
        d2 = torch.addmm(b3, features.view(n, c * (q + 4)), mean_operator).softmax(1)  # (n, c)
        z = F.conv2d(x, kernel, bias, 1, 1, 1, ch).view(n, c, p).sum(1, keepdim=True)
        # cross-spatial learning: z = d1 . x2 + d2 . x1 per row
        gate = z.baddbmm_(d2.unsqueeze(1), x1.view(n, c, p)).sigmoid_()  # (n, 1, p)
        ctx.groups = groups
        ctx.save_for_backward(x, y, mean, rstd, gate, gates, features, d2, kernel, w1, mean_operator, gamma, beta)
        return (xg.view(n, c, p) * gate).view(b, ch, h, w)

    @staticmethod
    @once_differentiable
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, y, mean, rstd, gate, gates, features, d2, kernel, w1, mean_operator, gamma, beta = ctx.saved_tensors
        groups = ctx.groups
        b, ch, h, w = x.shape
        c, n, p, q = ch // groups, b * groups, h * w, h + w
        xf, grad = x.view(n, c, p), grad_out.reshape(n, c, p)
        # output = x * sigmoid(z)
        g_z = (grad * xf).sum(1, keepdim=True).mul_(gate * (1 - gate))  # (n, 1, p)
        g_z_sum = g_z.sum(2)  # (n, 1)
        # z = ... + d2 . x1 with x1 = gamma * y_hat + beta: the descriptors and the affine parameters
        y_hat = torch.addcmul((-mean * rstd).unsqueeze(2), y.view(n, c, p), rstd.unsqueeze(2))
        g_z_y_hat = torch.bmm(y_hat, g_z.transpose(1, 2)).squeeze(2)  # (n, c): sum_p g_z * y_hat
        g_d2 = gamma * g_z_y_hat + beta * g_z_sum
        g_gamma = (d2 * g_z_y_hat).sum(0)
        g_beta = (d2 * g_z_sum).sum(0)
        # GroupNorm: g_y = rstd * (g_y_hat - mean(g_y_hat) - y_hat * mean(g_y_hat * y_hat)), g_y_hat = d2 gamma g_z
        scale = rstd * d2 * gamma
        g_y = y_hat.mul_((scale * g_z_y_hat / -p).unsqueeze(2))
        g_y.baddbmm_(scale.unsqueeze(2), g_z - g_z_sum.unsqueeze(2) / p)
        # y = x * gate_h * gate_w, gates = sigmoid(w1 @ pooled + b1)
        gate_h, gate_w = gates[..., :h], gates[..., h:]
        g_y_x = (g_y * xf).view(n * c, h, w)
        g_pre = torch.cat((torch.bmm(gate_w.reshape(n * c, 1, w), g_y_x.transpose(1, 2)).view(n, c, h),
                           torch.bmm(gate_h.reshape(n * c, 1, h), g_y_x).view(n, c, w)), 2)
        g_pre.mul_(gates * (1 - gates))  # (n, c, q)
        w1 = w1.view(c, c)
        g_w1 = (g_pre @ features[..., :q].transpose(1, 2)).sum(0)
        # d2 = softmax(b3 + features @ mean_operator)
        g_m2 = d2 * (g_d2 - (d2 * g_d2).sum(1, keepdim=True))
        g_features = (g_m2 @ mean_operator.t()).view(n, c, q + 4)
        g_pooled = g_features[..., :q] + w1.t() @ g_pre
        # z = depthwise conv of x with `kernel` (+ bias), summed over each row's channels
        g_z_taps = shifted_taps(g_z, h, w)  # (n, 9, p)
        g_kernel = torch.bmm(g_z_taps, xf.transpose(1, 2)).view(b, groups, 9, c).sum(0)  # per copy of the kernel
        g_kernel = g_kernel.transpose(1, 2).flip(2)  # tap t of the kernel met g_z at tap 8 - t
        g_bias = g_z_sum.view(b, groups, 1).sum(0).expand(groups, c).reshape(ch)
        # gradient wrt x, from each use: the conv, the output product, y, the pooled means and the corners
        g_x = torch.bmm(kernel.view(1, groups, c, 9).flip(3).expand(b, -1, -1, -1).reshape(n, c, 9), g_z_taps)
        g_x.addcmul_(grad, gate)
        g_x4 = g_x.view(n, c, h, w)
        g_x4.addcmul_(g_y.view(n, c, h, w) * gate_h.unsqueeze(3), gate_w.unsqueeze(2))
        g_x4 += g_pooled[..., :h, None] / w + g_pooled[..., None, h:] / h
        g_x.index_add_(2, window_means(h, w, x.device, x.dtype)[1], g_features[..., q:])
        return (g_x.view(b, ch, h, w), g_w1.view(c, c, 1, 1), g_pre.sum((0, 2)), g_gamma, g_beta, g_m2.sum(0),
                features.view(n, -1).t() @ g_m2, g_kernel.reshape_as(kernel), g_bias, None, None)
