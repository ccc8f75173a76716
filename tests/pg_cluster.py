"""A throwaway PostgreSQL cluster for the tests and for developers.

    python3 tests/pg_cluster.py                 # start one, print its DSN, stop on Ctrl-C
    python3 tests/pg_cluster.py -- pytest tests/pg   # run a command against one

The command runs with SQLITE_CT_TEST_PG_DSN set to the cluster's DSN. The
cluster lives in a temporary directory: `initdb` (trust authentication, user
"postgres"), `pg_ctl start` on a free port of 127.0.0.1 with fsync off, and
`pg_ctl stop` plus removal of the directory on exit. PostgreSQL refuses to run
as root, so under root the server runs as the `postgres` user (Debian's
postgresql package creates it).

The server binaries are looked up on PATH, then in Debian's
/usr/lib/postgresql/<version>/bin (newest version first), then in
$SQLITE_CT_PG_BIN.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from typing import Iterator, List, Optional

INSTALL_HINT = ("install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql; "
                "or run bash .ci/postgres.sh), or point SQLITE_CT_TEST_PG_DSN at a server")


class ClusterError(RuntimeError):
    """No PostgreSQL server binaries, or the cluster did not start."""


def find_bin_dir() -> Optional[str]:
    """The directory holding initdb, pg_ctl and postgres, or None."""
    candidates: List[str] = []
    if os.environ.get("SQLITE_CT_PG_BIN"):
        candidates.append(os.environ["SQLITE_CT_PG_BIN"])
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(os.path.dirname(os.path.realpath(on_path)))

    def version(path: str) -> float:
        try:
            return float(path.split("/")[-2])
        except ValueError:
            return 0.0
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    return next((d for d in candidates if _has_server(d)), None)


def _has_server(bin_dir: str) -> bool:
    return all(os.access(os.path.join(bin_dir, exe), os.X_OK)
               for exe in ("initdb", "pg_ctl", "postgres"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """A throwaway cluster's files and server binaries: `data` (its data
    directory), `work` (the temporary directory holding it), `dsn`, `port`;
    run() runs a server binary as the user the server runs as."""

    def __init__(self, bin_dir: str, work: str, user: Optional[str]) -> None:
        self.bin_dir = bin_dir
        self.work = work
        self.user = user
        self.data = os.path.join(work, "data")
        self.log = os.path.join(work, "server.log")
        self.port = 0
        self.dsn = ""

    def run(self, *args: str) -> str:
        """Run bin_dir/args[0] with args[1:] in `work`; its output, or ClusterError."""
        proc = subprocess.run((os.path.join(self.bin_dir, args[0]),) + args[1:], user=self.user,
                              cwd=self.work, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        if proc.returncode:
            tail = ""
            if os.path.exists(self.log):
                with open(self.log, encoding="utf-8", errors="replace") as f:
                    tail = f.read()[-2000:]
            raise ClusterError(f"{args[0]} failed ({proc.returncode}):\n{proc.stdout}{tail}")
        return proc.stdout

    def start(self, data: Optional[str] = None, *, options: str = "") -> str:
        """Start the server on `data` (default: this cluster's data directory)
        on a free port; returns its DSN."""
        if data is not None:
            self.data = data
        self.port = _free_port()
        opts = (f"-p {self.port} -k {self.work} -c listen_addresses=127.0.0.1 -F "
                f"-c max_connections=50 -c shared_buffers=32MB {options}")
        self.run("pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "60",
                 "start")
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return self.dsn

    def stop(self) -> None:
        self.run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")


@contextlib.contextmanager
def cluster(bin_dir: Optional[str] = None) -> Iterator[str]:
    """Start a throwaway cluster; yields its DSN; stops and removes it on exit."""
    with cluster_files(bin_dir) as c:
        yield c.dsn


@contextlib.contextmanager
def cluster_files(bin_dir: Optional[str] = None) -> Iterator[Cluster]:
    """cluster(), yielding the Cluster (its data directory, binaries and DSN)
    for tests that copy, back up or restart it. Whatever server runs on
    cluster.data at exit is stopped; the directory is removed."""
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is None or not _has_server(bin_dir):
        raise ClusterError(f"no PostgreSQL server binaries (initdb, pg_ctl) found; {INSTALL_HINT}")
    user = None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterError("running as root and there is no 'postgres' user to run the "
                               "server as (PostgreSQL refuses root); " + INSTALL_HINT) from None
        user = pw.pw_name
    # Under root the server runs as postgres, which must reach the directory:
    # /tmp rather than a $TMPDIR that may sit under /root.
    work = tempfile.mkdtemp(prefix="sqlite-ct-pg-", dir="/tmp" if user else None)
    if user is not None:
        os.chown(work, pw.pw_uid, pw.pw_gid)
    c = Cluster(bin_dir, work, user)
    try:
        c.run("initdb", "-D", c.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
              "--locale=C", "--no-sync")
        c.start()
        yield c
    finally:
        if c.dsn:
            with contextlib.suppress(ClusterError):
                c.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: List[str]) -> int:
    command = argv[argv.index("--") + 1:] if "--" in argv else []
    try:
        with cluster() as dsn:
            if not command:
                # SIGTERM (what .ci/run sends at its end) leaves through the
                # context manager, which stops the cluster and removes it.
                signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
                print(dsn, flush=True)
                print("PostgreSQL is running; Ctrl-C stops it.", file=sys.stderr)
                with contextlib.suppress(KeyboardInterrupt):
                    signal_wait()
                return 0
            env = dict(os.environ, SQLITE_CT_TEST_PG_DSN=dsn)
            return subprocess.call(command, env=env)
    except ClusterError as exc:
        print(f"pg_cluster: {exc}", file=sys.stderr)
        return 2


def signal_wait() -> None:
    signal.pause()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
