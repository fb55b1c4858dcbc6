"""Helpers shared by the attention modules: the one error for channel counts that do not fit, and precision."""

from __future__ import annotations

import torch
import torch.nn as nn


def check_divisible(name: str, channels: int, divisor: int, what: str) -> None:
    """Raise the project's ValueError when ``channels`` is not a positive multiple of ``divisor``."""
    if channels < divisor or channels % divisor:
        raise ValueError(
            f"{name}: {channels} input channels cannot be split into {what}; "
            f"use a channel count that is a multiple of {divisor}, or change the module's option")


def check_ratio(name: str, channels: int, ratio: int, option: str = "ratio") -> int:
    """``channels // ratio`` hidden channels, or the project's ValueError when that leaves none."""
    if ratio < 1 or channels < ratio:
        raise ValueError(f"{name}: {channels} input channels are fewer than {option}={ratio}; "
                         f"use {option} <= {channels}")
    return channels // ratio


def full_precision(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with autocast off, in the module's own parameter dtype (float32 unless the model was cast).

    For a small MLP on sums over every pixel: it costs nothing, and in fp16 such sums overflow, in bf16 they lose the
    differences the MLP reads.
    """
    with torch.autocast(x.device.type, enabled=False):
        return module(x.to(next(module.parameters()).dtype))
