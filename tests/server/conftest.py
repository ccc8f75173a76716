"""Real sync services for the tests: `sqlite-ct serve` in a subprocess on a
free port of 127.0.0.1 (always stopped at teardown), a hub database with a
`notes` table filtered by owner, clients that sync through HTTP, and a TCP
proxy that can cut a connection in the middle of an answer."""
from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import apsw
import httpx
import pytest

import sqlite_ct
from sqlite_ct.sync import ClientSyncProvider, SyncAgent
from sqlite_ct.sync.http import HttpServerProvider

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"
EXPIRED = "old-token-0123456789abc"
SCHEMA = "CREATE TABLE notes(id INTEGER PRIMARY KEY, owner TEXT NOT NULL, body TEXT)"
SEED = ("INSERT INTO notes VALUES (1, 'alice', 'a1'), (2, 'bob', 'b1'), (3, 'alice', 'a2'), "
        "(4, 'bob', 'b2')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(path: str) -> apsw.Connection:
    conn = apsw.Connection(path)
    sqlite_ct.load(conn)
    conn.setbusytimeout(10_000)
    return conn


def rows(conn: Any, where: str = "1") -> List[tuple]:
    return conn.execute(f"SELECT id, owner, body FROM notes WHERE {where} ORDER BY id").fetchall()


class Service:
    """`python3 -m sqlite_ct serve` over a config file; start/kill/restart."""

    def __init__(self, workdir: str, config: Dict[str, Any], ssl: Optional[tuple] = None
                 ) -> None:
        self.workdir = workdir
        self.config_path = os.path.join(workdir, "server.json")
        with open(self.config_path, "w") as f:
            json.dump(config, f)
        self.ssl = ssl
        self.port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.log = open(os.path.join(workdir, "serve.log"), "ab")

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> "Service":
        cmd = [sys.executable, "-m", "sqlite_ct", "serve", "--config", self.config_path,
               "--port", str(self.port), "--log-level", "warning"]
        if self.ssl:
            cmd += ["--ssl-certfile", self.ssl[0], "--ssl-keyfile", self.ssl[1]]
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the service exited with {self.proc.returncode}: "
                                   + open(os.path.join(self.workdir, "serve.log")).read())
            try:
                httpx.get(self.url + "/healthz", timeout=1,
                          verify=ssl.create_default_context(cafile=self.ssl[0])
                          if self.ssl else True)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("the service did not start within 20 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def restart_later(self, delay: float) -> threading.Thread:
        t = threading.Thread(target=lambda: (time.sleep(delay), self.start()), daemon=True)
        t.start()
        return t


def make_hub(workdir: str) -> str:
    path = os.path.join(workdir, "hub.db")
    conn = apsw.Connection(path)
    conn.execute(SCHEMA)
    conn.execute(SEED)
    conn.close()
    return path


def default_config(**extra: Any) -> Dict[str, Any]:
    return {"hub": "hub.db", "tables": ["notes"], "filters": {"notes": "owner = :user"},
            "tokens": {ALICE: {"user": "alice"}, BOB: {"user": "bob"},
                       EXPIRED: {"user": "carol", "expires": "2001-01-01T00:00:00Z"}},
            **extra}


@pytest.fixture
def start_service(tmp_path):
    """start_service(**config_members) -> a started Service over a seeded hub."""
    made: List[Service] = []

    def start(ssl: Optional[tuple] = None, **extra: Any) -> Service:
        workdir = tmp_path / f"service{len(made)}"
        workdir.mkdir()
        make_hub(str(workdir))
        service = Service(str(workdir), default_config(**extra), ssl)
        made.append(service)
        return service.start()

    yield start
    for service in made:
        service.stop()
        service.log.close()


class Client:
    """A client database syncing through HTTP."""

    def __init__(self, path: str, url: str, token: str, **agent: Any) -> None:
        self.conn = connect(path)
        self.server = HttpServerProvider(url, token=token, timeout=10, retries=6)
        self.agent = SyncAgent(ClientSyncProvider(self.conn), self.server, ["notes"], **agent)

    def sync(self):
        return self.agent.synchronize()

    def close(self) -> None:
        self.server.close()
        self.conn.close()


@pytest.fixture
def clients(tmp_path):
    made: List[Client] = []

    def make(name: str, url: str, token: str, **agent: Any) -> Client:
        client = Client(str(tmp_path / f"{name}.db"), url, token, **agent)
        made.append(client)
        return client

    yield make
    for c in made:
        c.close()


class Proxy:
    """A TCP proxy to a service. cut(path, keep) makes it forward only the
    first `keep` bytes of the next answer to a request for `path`, then close
    the connection: the answer is lost, whatever the service did."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.armed: Optional[tuple] = None
        self.cuts = 0
        self.on_request: Optional[Callable[[bytes], None]] = None
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self, path: str, keep: int = 0) -> None:
        with self._lock:
            self.armed = (path.encode(), keep)

    def close(self) -> None:
        self._stop = True
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target))
        except OSError:
            client.close()
            return
        state = {"request": b"", "cut": None}

        def up() -> None:
            try:
                while True:
                    data = client.recv(65536)
                    if not data:
                        break
                    if data[:5] in (b"POST ", b"GET /"):
                        state["request"] = data.split(b"\r\n", 1)[0]
                        with self._lock:
                            armed = self.armed
                            if armed and armed[0] in state["request"]:
                                state["cut"] = armed[1]
                                self.armed = None
                    upstream.sendall(data)
                    if self.on_request is not None and data[:5] == b"POST ":
                        self.on_request(state["request"])
            except OSError:
                pass
            finally:
                with_shutdown(upstream)

        threading.Thread(target=up, daemon=True).start()
        sent = 0
        try:
            while True:
                data = upstream.recv(65536)
                if not data:
                    break
                cut = state["cut"]
                if cut is not None:
                    if state.get("base") is None:
                        state["base"] = sent
                    done = sent - state["base"]
                    if done + len(data) >= cut:
                        client.sendall(data[:max(0, cut - done)])
                        self.cuts += 1
                        break
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            with_shutdown(client)
            with_shutdown(upstream)


def with_shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
