"""Serve the API with uvicorn inside orderwatch's own event loop.

``orderwatch api`` runs only this; ``orderwatch serve`` runs it beside the worker and the
deliverer, on one loop and one :class:`~orderwatch.service.Service`, and stops all three
on one SIGTERM. uvicorn's own signal handling is turned off for that: the command owns the
signals and tells the server to exit (:meth:`ApiServer.stop`).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Generator

import uvicorn

from ..errors import ConfigError
from ..log import get_logger
from ..service import Service
from ..settings import parse_listen
from .app import create_app

log = get_logger("orderwatch.api")


class ApiServer(uvicorn.Server):
    """A uvicorn server that leaves the process's signals to its owner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    sockets: list[socket.socket]

    def stop(self) -> None:
        self.should_exit = True

    async def run_bound(self) -> None:
        """Serve on the socket :func:`make_server` bound (so a busy port fails early)."""
        await self.serve(sockets=self.sockets)


def make_server(
    service: Service,
    *,
    listen: str | None = None,
    wake: Callable[[], None] | None = None,
) -> ApiServer:
    host, port = parse_listen(listen or service.settings.current.api.listen)
    app = create_app(service, wake=wake)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,  # orderwatch logs through structlog; tokens never reach a log
        access_log=False,  # the app logs each request itself, with the caller's name
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=int(
            service.settings.current.worker.shutdown_grace.total_seconds()
        )
        or None,
    )
    server = ApiServer(config)
    server.sockets = [bind(host, port)]
    port = server.sockets[0].getsockname()[1]
    log.info(
        "api_listening",
        url=f"http://{_show_host(host)}:{port}",
        docs=f"http://{_show_host(host)}:{port}/api/v1/docs",
    )
    return server


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port, or a ConfigError naming api.listen and the reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            [f"api.listen: cannot listen on {_show_host(host)}:{port}: {exc.strerror or exc}"]
        ) from None
    return sock


def _show_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
