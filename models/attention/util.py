"""Helpers shared by the attention modules: the project's one error for channel counts that do not fit."""

from __future__ import annotations


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
