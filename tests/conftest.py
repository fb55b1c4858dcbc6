"""Shared pytest setup: the suite runs offline (no engine look-ups, no network), and fixtures used by several files."""

import functools
import http.server
import os
import socket
import threading

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")  # before any test module imports ultralytics (it checks once)

_LOCAL_PREFIXES = ("127.", "::1", "localhost", "0.0.0.0")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """The suite must pass with no network: any connection to a non-loopback address fails the test loudly."""
    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        internet = self.family in (socket.AF_INET, socket.AF_INET6)
        if isinstance(host, str) and not host.startswith(_LOCAL_PREFIXES) and internet:
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


@pytest.fixture
def log_records():
    """(level, message) of every record the engine's logger emits during the test: utils/ logs through it, and it
    does not propagate to the root logger, where ``caplog`` listens."""
    import logging

    from ultralytics.utils import LOGGER

    records: list[tuple[str, str]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.levelname.lower(), record.getMessage()))

    handler, level = Keep(logging.DEBUG), LOGGER.level
    LOGGER.handlers.insert(0, handler)  # first: the engine's own handler prefixes warnings in the record itself
    LOGGER.setLevel(logging.DEBUG)
    yield records
    LOGGER.removeHandler(handler)
    LOGGER.setLevel(level)


@pytest.fixture
def cli_error(capsys):
    """``cli_error(main, argv)``: run a command line that must refuse its input; check that it exits with code 1 and
    prints no traceback, and return what it printed on stderr."""

    def run(main, argv: list[str]) -> str:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return err

    return run


@pytest.fixture
def http_dir(tmp_path):
    """Serve a folder over HTTP on the loopback interface; yields (folder, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
