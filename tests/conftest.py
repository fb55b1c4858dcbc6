"""Shared pytest setup: the suite runs offline, and the repository root is importable."""

import os
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")  # must be set before ultralytics is imported (it checks once)

_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import socket  # noqa: E402

import pytest  # noqa: E402

_LOCAL_PREFIXES = ("127.", "::1", "localhost", "0.0.0.0")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """The suite must pass with no network: any connection to a non-loopback address fails the test loudly."""
    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if isinstance(host, str) and not host.startswith(_LOCAL_PREFIXES) and self.family in (socket.AF_INET, socket.AF_INET6):
            raise RuntimeError(f"test tried to reach the network: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", _offline_getaddrinfo(socket.getaddrinfo))


def _offline_getaddrinfo(real):
    def getaddrinfo(host, *args, **kwargs):
        if host is None or str(host).startswith(_LOCAL_PREFIXES):
            return real(host, *args, **kwargs)
        raise socket.gaierror(f"network disabled in tests (looked up {host})")

    return getaddrinfo
