"""The sqlite-ct sync service: hub-and-spoke synchronisation over HTTP.

    from sqlite_ct.server import create_app
    app = create_app("server.json")      # an ASGI application (Starlette)

or `sqlite-ct serve --config server.json`. Clients use
sqlite_ct.sync.http.HttpServerProvider with SyncAgent, or `sqlite-ct sync
CLIENT.db URL --token TOKEN`. docs/server.md describes the configuration,
authentication, TLS, deployment and the protocol. Needs the "server" extra
(starlette, uvicorn, httpx).
"""
from .app import ServiceError, create_app
from .config import (AuthenticationError, Config, ConfigError, Identity, TokenTable, Verifier,
                     load_config)

__all__ = ["create_app", "load_config", "Config", "ConfigError", "Identity", "TokenTable",
           "Verifier", "AuthenticationError", "ServiceError", "serve"]


def serve(config: "str | Config", *, host: str = "127.0.0.1", port: int = 8000,
          ssl_certfile: "str | None" = None, ssl_keyfile: "str | None" = None,
          log_level: str = "info") -> None:
    """Run the service with uvicorn until interrupted (one process: SQLite
    serialises the hub's writers anyway)."""
    import uvicorn
    app = create_app(config)
    uvicorn.run(app, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                log_level=log_level, proxy_headers=False, server_header=False)
