"""The sqlite-ct sync service: hub-and-spoke synchronisation over HTTP.

    from sqlite_ct.server import create_app
    app = create_app("server.json")      # an ASGI application (Starlette)

or `sqlite-ct serve --config server.json`. Clients use
sqlite_ct.sync.http.HttpServerProvider with SyncAgent, or `sqlite-ct sync
CLIENT.db URL --token TOKEN`. docs/server.md describes the configuration,
authentication, TLS, deployment and the protocol. Needs the "server" extra
(starlette, uvicorn, httpx), and the "postgres" extra for a PostgreSQL hub.
"""
import contextlib
import socket
import threading
import time
from typing import Any, Iterator, Optional

from .app import ServiceError, create_app
from .config import (AuthenticationError, Config, ConfigError, Identity, TokenTable, Verifier,
                     load_config)

__all__ = ["create_app", "load_config", "Config", "ConfigError", "Identity", "TokenTable",
           "Verifier", "AuthenticationError", "ServiceError", "serve", "running"]


def serve(config: "str | Config", *, host: str = "127.0.0.1", port: int = 8000,
          ssl_certfile: "str | None" = None, ssl_keyfile: "str | None" = None,
          log_level: str = "info") -> None:
    """Run the service with uvicorn until interrupted (one process: SQLite
    serialises the hub's writers anyway; a PostgreSQL hub can be served by
    several such processes)."""
    import uvicorn
    app = create_app(config)
    uvicorn.run(app, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                log_level=log_level, proxy_headers=False, server_header=False)


@contextlib.contextmanager
def running(config: Any, *, host: str = "127.0.0.1", port: int = 0,
            verifier: Optional[Verifier] = None) -> Iterator[str]:
    """Run the service with uvicorn in a background thread of this process
    (port 0: a free port) and yield its base URL; stopped on exit. For demos,
    tests and embedding; a deployment runs `sqlite-ct serve`."""
    import uvicorn
    app = create_app(config, verifier=verifier)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="on", server_header=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True,
                              name="sqlite-ct-serve")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("sqlite-ct: the sync service did not start")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
