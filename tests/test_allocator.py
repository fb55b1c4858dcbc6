"""utils/allocator.py: malloc keeps freed memory on glibc, only for CPU runs."""

import platform

import pytest
import torch

from utils import allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_freed_memory_applies_on_glibc(monkeypatch):
    monkeypatch.setattr(allocator, "_STATE", {"tuned": False})
    assert allocator.setting() == "stock malloc"
    assert allocator.keep_freed_memory() and allocator.is_tuned()
    assert allocator.setting() == "malloc keeps freed memory"


def test_not_glibc_is_left_alone(monkeypatch):
    monkeypatch.setattr(allocator, "_STATE", {"tuned": False})
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert not allocator.keep_freed_memory() and not allocator.is_tuned()


@pytest.mark.parametrize("device, cuda, tuned", [("cpu", True, True), ("", False, True), (None, False, True),
                                                 ("", True, False), ("0", True, False), ("0,1", True, False),
                                                 ("cuda", True, False), ("CPU", False, True)])
def test_only_cpu_runs_change_malloc(monkeypatch, device, cuda, tuned):
    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert allocator.keep_freed_memory_on_cpu(device) is tuned
    assert len(calls) == tuned
