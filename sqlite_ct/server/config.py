"""The sync service's configuration and its authentication hook.

A configuration is JSON (docs/server.md):

    {"hub": "hub.db", "tables": ["notes"], "filters": {"notes": "owner = :user"},
     "tokens": {"<token>": {"user": "alice"}}}

load_config() checks every member and says what is wrong with which one; a
hub path is relative to the configuration file's directory. A hub that is a
PostgreSQL URL ("postgresql://user@host/db") is served by the PostgreSQL hub
(sqlite_ct.sync.pg), its tables in "hub_schema" (default "public").

Authentication: a verifier maps the bearer token of a request to an Identity
(the user, and the values of the filter parameters), returns None for an
unknown token, or raises AuthenticationError with a reason (an expired token).
TokenTable is the built-in verifier over the "tokens" member; any callable
with the same signature (a JWT check, a lookup in another service) can be
passed to create_app(verifier=...) or named in the configuration as
"verifier": "package.module:name".
"""
from __future__ import annotations

import dataclasses
import datetime
import hmac
import importlib
import json
import os
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from ..errors import Error

__all__ = ["Config", "ConfigError", "AuthenticationError", "Identity", "TokenTable",
           "Verifier", "load_config"]


class ConfigError(Error):
    """The sync service's configuration is invalid; the message names the member."""


class AuthenticationError(Error):
    """A verifier refuses a token for a reason the client should hear
    (expired, revoked). Answered with 401 and the code "token_expired" when
    `expired` is true, "unauthorized" otherwise."""

    def __init__(self, message: str, *, expired: bool = False) -> None:
        super().__init__(message)
        self.expired = expired


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who a request comes from. `user` owns the client ids registered under
    it; `parameters` bind the hub's row filters for that user (the "user"
    parameter is the user unless given otherwise)."""
    user: str
    parameters: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def filter_parameters(self) -> Dict[str, Any]:
        return {"user": self.user, **self.parameters}


Verifier = Callable[[str], Optional[Identity]]

_SQLITE_SCALARS = (str, int, float, bytes, type(None))


def _parse_time(value: Any, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.timezone.utc)
            return moment.timestamp()
    raise ConfigError(f"{where}: expected a time (ISO 8601, e.g. \"2027-01-31T00:00:00Z\", "
                      f"or seconds since the epoch), got {value!r}")


class TokenTable:
    """The built-in verifier: {token: {"user": ..., "expires": ..., other
    filter parameters}}. Tokens are compared in constant time."""

    def __init__(self, tokens: Mapping[str, Mapping[str, Any]]) -> None:
        self._entries: Tuple[Tuple[bytes, Identity, Optional[float]], ...] = ()
        entries = []
        for token, entry in tokens.items():
            where = f'config "tokens" entry {_mask(token)}'
            if not isinstance(token, str) or len(token) < 16:
                raise ConfigError(f"{where}: a token must be a string of at least 16 "
                                  f"characters")
            if not isinstance(entry, Mapping) or not isinstance(entry.get("user"), str) \
                    or not entry.get("user"):
                raise ConfigError(f'{where}: expected an object with a non-empty "user"')
            expires = None
            params = {}
            for key, value in entry.items():
                if key == "expires":
                    expires = _parse_time(value, f'{where} "expires"')
                elif key != "user":
                    if not isinstance(value, _SQLITE_SCALARS) or isinstance(value, bool):
                        raise ConfigError(f'{where} "{key}": a filter parameter must be a '
                                          f"string, a number or null")
                    params[key] = value
            entries.append((token.encode("utf-8"), Identity(entry["user"], params), expires))
        self._entries = tuple(entries)

    def __call__(self, token: str) -> Optional[Identity]:
        given = token.encode("utf-8", "surrogatepass")
        found = None
        for known, identity, expires in self._entries:
            if hmac.compare_digest(known, given):
                found = (identity, expires)
        if found is None:
            return None
        identity, expires = found
        if expires is not None and datetime.datetime.now().timestamp() >= expires:
            raise AuthenticationError("the token has expired; ask for a new one", expired=True)
        return identity


def _mask(token: Any) -> str:
    text = str(token)
    return repr(text[:4] + "…") if len(text) > 4 else repr("…")


@dataclasses.dataclass(frozen=True)
class Config:
    """A checked configuration. Limits: max_request_bytes (a request body,
    also once decompressed), max_batch_size (changes per download batch; a
    client asking for more, or for one unbounded batch, gets this many),
    busy_timeout_ms (how long a request waits for the hub's write lock; on
    PostgreSQL for a row or table lock, as lock_timeout),
    pool_size (hub connections kept open), request_timeout_s (the hub work
    of one request is interrupted after this long: 503 "timeout")."""
    hub: str
    tables: Tuple[str, ...]
    filters: Mapping[str, str]
    verifier: Verifier
    max_request_bytes: int = 32 * 1024 * 1024
    max_batch_size: int = 5000
    busy_timeout_ms: int = 30_000
    pool_size: int = 4
    request_timeout_s: float = 120.0
    hub_schema: str = "public"

    @property
    def postgres(self) -> bool:
        """Whether the hub is a PostgreSQL database (a postgresql:// URL)."""
        return self.hub.startswith(_PG_SCHEMES)


_PG_SCHEMES = ("postgresql://", "postgres://")
_KNOWN = {"hub", "tables", "filters", "tokens", "verifier", "max_request_bytes",
          "max_batch_size", "busy_timeout_ms", "pool_size", "request_timeout_s", "hub_schema"}


def _positive(doc: Mapping[str, Any], name: str, default: int) -> int:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f'config "{name}": expected a positive integer, got {value!r}')
    return value


def _seconds(doc: Mapping[str, Any], name: str, default: float) -> float:
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1e6:
        raise ConfigError(f'config "{name}": expected a number of seconds > 0, got {value!r}')
    return float(value)


def _import_verifier(spec: Any) -> Verifier:
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ConfigError(f'config "verifier": expected "package.module:name", got {spec!r}')
    module, name = spec.split(":")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f'config "verifier": cannot import {spec!r}: {exc}') from None
    if not callable(found):
        raise ConfigError(f'config "verifier": {spec!r} is not callable')
    verifier: Verifier = found
    return verifier


def load_config(source: Union[str, "os.PathLike[str]", Mapping[str, Any], Config], *,
                verifier: Optional[Verifier] = None) -> Config:
    """A Config from a JSON file path, a dict of the same shape, or a Config.
    `verifier` replaces the configuration's token table or "verifier"."""
    if isinstance(source, Config):
        return dataclasses.replace(source, verifier=verifier) if verifier else source
    base = os.getcwd()
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except OSError as exc:
            raise ConfigError(f'cannot read the configuration "{path}": {exc.strerror}') \
                from None
        except ValueError as exc:
            raise ConfigError(f'the configuration "{path}" is not valid JSON: {exc}') from None
        base = os.path.dirname(os.path.abspath(path))
    else:
        doc = source
    if not isinstance(doc, Mapping):
        raise ConfigError("the configuration must be a JSON object")
    unknown = sorted(set(doc) - _KNOWN)
    if unknown:
        raise ConfigError(f"unknown configuration member {unknown[0]!r}; known: "
                          f"{', '.join(sorted(_KNOWN))}")
    hub = doc.get("hub")
    if not isinstance(hub, str) or not hub:
        raise ConfigError('config "hub": expected the path of the hub database (a SQLite '
                          'file), e.g. "hub.db", or a PostgreSQL URL, e.g. '
                          '"postgresql://sync@db.example/hub"')
    postgres = hub.startswith(_PG_SCHEMES)
    hub_schema = doc.get("hub_schema", "public")
    if not postgres and "hub_schema" in doc:
        raise ConfigError('config "hub_schema": only a PostgreSQL hub (a postgresql:// URL) '
                          "has schemas; remove it for a SQLite hub")
    if not isinstance(hub_schema, str) or not hub_schema:
        raise ConfigError(f'config "hub_schema": expected the name of a schema, got '
                          f"{hub_schema!r}")
    if not postgres and (hub == ":memory:" or hub.startswith("file:")):
        raise ConfigError('config "hub": expected the path of a database file (an in-memory '
                          "database cannot be shared by the service's connections)")
    if not postgres and not os.path.isabs(hub):
        hub = os.path.join(base, hub)
    tables = doc.get("tables")
    if not isinstance(tables, list) or not tables or not all(
            isinstance(t, str) and t for t in tables):
        raise ConfigError('config "tables": expected a non-empty list of table names')
    if len({t.lower() for t in tables}) != len(tables):
        raise ConfigError('config "tables": a table is listed twice')
    filters = doc.get("filters", {})
    if not isinstance(filters, Mapping):
        raise ConfigError('config "filters": expected an object {table: "SQL expression"}')
    served = {t.lower() for t in tables}
    for table, where in filters.items():
        if table.lower() not in served:
            raise ConfigError(f'config "filters": table "{table}" is not in "tables"')
        if not isinstance(where, str) or not where.strip():
            raise ConfigError(f'config "filters" "{table}": expected an SQL expression such '
                              f'as "owner = :user"')
    if verifier is None:
        if "verifier" in doc:
            verifier = _import_verifier(doc["verifier"])
        elif "tokens" in doc:
            tokens = doc["tokens"]
            if not isinstance(tokens, Mapping):
                raise ConfigError('config "tokens": expected an object {token: {"user": ...}}')
            verifier = TokenTable(tokens)
        else:
            raise ConfigError('the configuration needs "tokens" (or a "verifier"): without '
                              "them no client could authenticate")
    return Config(hub, tuple(tables), dict(filters), verifier,
                  _positive(doc, "max_request_bytes", Config.max_request_bytes),
                  _positive(doc, "max_batch_size", Config.max_batch_size),
                  _positive(doc, "busy_timeout_ms", Config.busy_timeout_ms),
                  _positive(doc, "pool_size", Config.pool_size),
                  _seconds(doc, "request_timeout_s", Config.request_timeout_s),
                  hub_schema=hub_schema)
