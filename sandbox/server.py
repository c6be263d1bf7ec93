"""Serving a sandbox over loopback: in the foreground for ``notifsync sandbox``, or in a
background thread for the demo, the tests and the benchmarks."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from sandbox.app import Sandbox
from sandbox.behaviour import QuietDroppedConnections


def _config(sandbox: Sandbox, log_level: str) -> uvicorn.Config:
    logging.getLogger("uvicorn.error").addFilter(QuietDroppedConnections())
    return uvicorn.Config(
        sandbox.app,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        # Keep-alive long enough that a client's pool is not cut between pages.
        timeout_keep_alive=30,
    )


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket; port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


def serve(sandbox: Sandbox, sock: socket.socket, log_level: str = "warning") -> None:
    """Serve until interrupted (Ctrl-C)."""
    uvicorn.Server(_config(sandbox, log_level)).run(sockets=[sock])


@contextlib.contextmanager
def serve_in_thread(
    sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
) -> Iterator[str]:
    """Run the sandbox on loopback in a daemon thread; yields its base URL, stops on exit."""
    sock = bind(host, port)
    server = uvicorn.Server(_config(sandbox, log_level))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="sandbox", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the sandbox server did not start")
        time.sleep(0.01)
    try:
        yield base_url(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
