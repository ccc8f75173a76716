"""The sync service over a PostgreSQL hub: real `sqlite-ct serve` processes
on 127.0.0.1 with "hub": "postgresql://...", a real PostgreSQL server
(tests/pg_fixtures.py: skipped with the reason when there is none, a failure
under SQLITE_CT_REQUIRE_PG=1), real clients over HTTP. The same scopes,
credentials and exactly-once uploads as over a SQLite hub; client owners and
upload receipts live in PostgreSQL, so two service processes serve one hub."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from urllib.parse import urlencode

import httpx
import pytest

from pg_fixtures import pg_dsn, pg_server, pg_test_database  # noqa: F401
from sqlite_ct.sync import DownloadRequest, DownloadTable, TableChanges, Upload, wire
from sqlite_ct.sync.http import HttpServerProvider, RemoteError

from .conftest import ALICE, BOB, EXPIRED, REPO, SCHEMA, SEED, Proxy, Service, default_config, rows

ROWS = 1200


def url_of(dsn: str) -> str:
    """A postgresql:// URL for a conninfo string."""
    if dsn.startswith(("postgresql://", "postgres://")):
        return dsn
    from psycopg.conninfo import conninfo_to_dict
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    return f"postgresql:///{params.pop('dbname')}?{urlencode(params)}"


class PgHub:
    """The hub database, seen the way another application sees it."""

    def __init__(self, dsn: str) -> None:
        import psycopg
        self.conn = psycopg.connect(dsn, autocommit=True)

    def execute(self, sql, params=()):
        cur = self.conn.execute(sql, params)
        return cur.fetchall() if cur.description else []

    def rows(self, where="true"):
        return [tuple(r) for r in self.execute(
            f"SELECT id, owner, body FROM notes WHERE {where} ORDER BY id")]


@pytest.fixture
def pg_hub(pg_dsn):
    hub = PgHub(pg_dsn)
    hub.execute(SCHEMA)
    hub.execute(SEED)
    yield hub
    hub.conn.close()


@pytest.fixture
def pg_service(pg_hub, pg_dsn, tmp_path):
    """pg_service(**config_members) -> a started Service over the PostgreSQL hub."""
    made = []

    def start(**extra):
        workdir = tmp_path / f"service{len(made)}"
        workdir.mkdir()
        service = Service(str(workdir), default_config(hub=url_of(pg_dsn), **extra))
        made.append(service)
        return service.start()

    yield start
    for service in made:
        service.stop()
        service.log.close()


def post(service, path, body, token=ALICE):
    return httpx.post(service.url + path, content=body,
                      headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=30)


def test_two_users_each_sync_only_their_own_rows(pg_hub, pg_service, clients):
    service = pg_service()
    alice = clients("alice", service.url, ALICE)
    bob = clients("bob", service.url, BOB)
    alice.sync()
    bob.sync()
    assert rows(alice.conn) == pg_hub.rows("owner = 'alice'")
    assert rows(bob.conn) == pg_hub.rows("owner = 'bob'")
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (10, 'alice', 'new')")
    alice.conn.execute("UPDATE notes SET body = 'edited' WHERE id = 1")
    bob.conn.execute("DELETE FROM notes WHERE id = 4")
    pg_hub.execute("UPDATE notes SET body = 'from the hub' WHERE id = 2")
    for c in (alice, bob, alice, bob):
        c.sync()
    assert rows(alice.conn) == pg_hub.rows("owner = 'alice'") == [
        (1, "alice", "edited"), (3, "alice", "a2"), (10, "alice", "new")]
    assert rows(bob.conn) == pg_hub.rows("owner = 'bob'") == [(2, "bob", "from the hub")]
    quiet = alice.sync()
    assert (quiet.total_changes_uploaded, quiet.total_changes_downloaded) == (0, 0)


def test_a_user_cannot_read_another_users_rows(pg_hub, pg_service, clients):
    service = pg_service()
    alice = clients("alice", service.url, ALICE)
    alice.sync()
    bob = clients("bob", service.url, BOB)
    bob.sync()
    request = DownloadRequest(alice.agent.client.client_id, "notes",
                              [DownloadTable("notes", None)], None, {"user": "bob"})
    r = post(service, "/v1/download", wire.encode(request))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert 'filter parameter "user" is set by the service' in r.json()["message"]
    # Bob's client id with alice's token: the owner is recorded in PostgreSQL.
    assert pg_hub.execute("SELECT owner FROM sqlite_ct.client_owners WHERE client_id = %s",
                          (bob.agent.client.client_id,)) == [("bob",)]
    request = DownloadRequest(bob.agent.client.client_id, "notes",
                              [DownloadTable("notes", None)])
    r = post(service, "/v1/download", wire.encode(request))
    assert r.status_code == 403 and "is registered to another user" in r.json()["message"]
    for table in ("client_owners", "upload_receipts", "hub_info"):
        request = DownloadRequest(uuid.uuid4(), "x", [DownloadTable(table, None)])
        r = post(service, "/v1/download", wire.encode(request))
        assert r.status_code == 403 and "is not served here" in r.json()["message"]
    assert rows(alice.conn) == pg_hub.rows("owner = 'alice'")


def test_a_user_cannot_write_another_users_rows(pg_hub, pg_service, clients):
    service = pg_service()
    alice = clients("alice", service.url, ALICE)
    alice.sync()
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (2, 'alice', 'taken')")
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (20, 'bob', 'planted')")
    alice.conn.execute("UPDATE notes SET owner = 'bob' WHERE id = 1")
    stats = alice.sync()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (0, 3)
    assert all(c.error.startswith("refused:") and c.server_row is None
               for c in stats.conflicts)
    assert pg_hub.rows() == [(1, "alice", "a1"), (2, "bob", "b1"), (3, "alice", "a2"),
                             (4, "bob", "b2")]
    assert rows(alice.conn) == pg_hub.rows("owner = 'alice'")
    with HttpServerProvider(service.url, token=ALICE) as server:
        result = server.apply_changes(Upload(
            alice.agent.client.client_id, "notes",
            [TableChanges("notes", ("id", "owner", "body"), ("id",), deletes=[(2,)],
                          updates=[(4, "bob", "edited by alice")])],
            {"notes": None}))
    assert (result.applied, result.failed) == (0, 2)
    assert pg_hub.rows("owner = 'bob'") == [(2, "bob", "b1"), (4, "bob", "b2")]


@pytest.mark.parametrize("token, status, code", [
    (None, 401, "unauthorized"),
    ("forged-token-0123456789", 401, "unauthorized"),
    (EXPIRED, 401, "token_expired"),
])
def test_bad_tokens_get_401(pg_service, token, status, code):
    service = pg_service()
    body = wire.encode(DownloadRequest(uuid.uuid4(), "notes", [DownloadTable("notes", None)]))
    r = post(service, "/v1/download", body, token=token)
    assert (r.status_code, r.json()["code"]) == (status, code)


def test_an_upload_answer_lost_on_a_cut_connection_is_applied_once(pg_hub, pg_service,
                                                                    clients):
    # Every row written to the hub leaves a line in `audit`: an upload batch
    # applied twice would leave two.
    pg_hub.execute("CREATE TABLE audit (id integer)")
    pg_hub.execute("CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS "
                   "$$BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NEW; END$$")
    pg_hub.execute("CREATE TRIGGER audit AFTER INSERT OR UPDATE ON notes FOR EACH ROW "
                   "EXECUTE FUNCTION audit_row()")
    service = pg_service()
    proxy = Proxy(service.port)
    alice = clients("alice", proxy.url, ALICE, upload_batch_size=400)
    alice.sync()
    alice.conn.execute("WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n "
                       "WHERE i < ?) INSERT INTO notes(id, owner, body) "
                       "SELECT 1000 + i, 'alice', 'row ' || i FROM n", (ROWS - 1,))
    proxy.cut("/v1/upload", keep=0)
    stats = alice.sync()
    assert proxy.cuts == 1
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (ROWS, 0)
    assert pg_hub.execute("SELECT count(*), count(DISTINCT id) FROM audit") == [(ROWS, ROWS)]
    assert rows(alice.conn) == pg_hub.rows("owner = 'alice'")
    proxy.close()


def test_two_service_processes_on_one_hub_serve_clients_concurrently(pg_hub, pg_service,
                                                                     clients):
    services = [pg_service(), pg_service()]
    users = {"alice": ALICE, "bob": BOB}
    people = [(user, i) for user in users for i in range(2)]
    each = {(user, i): clients(f"{user}{i}", services[i].url, users[user])
            for user, i in people}
    errors = []

    def work(user, i, seed):
        rnd = random.Random(seed)
        client = each[(user, i)]
        try:
            client.sync()
            for round_no in range(6):
                ids = [r[0] for r in rows(client.conn)]
                for n in range(rnd.randint(1, 4)):
                    kind = rnd.random()
                    if kind < 0.5 or not ids:
                        new = 10_000 * (1 + people.index((user, i))) + round_no * 10 + n
                        client.conn.execute("INSERT INTO notes(id, owner, body) VALUES "
                                            "(?, ?, ?)", (new, user, f"{user}{i}"))
                    elif kind < 0.8:
                        client.conn.execute("UPDATE notes SET body = ? WHERE id = ?",
                                            (f"{user}{i} r{round_no}", rnd.choice(ids)))
                    else:
                        client.conn.execute("DELETE FROM notes WHERE id = ?",
                                            (rnd.choice(ids),))
                client.sync()
        except Exception as exc:       # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u, i, n)) for n, (u, i) in enumerate(people)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    # Each client also uses the other process: the owners are in the hub.
    for (user, i), client in each.items():
        client.agent.server = HttpServerProvider(services[1 - i].url, token=users[user],
                                                 timeout=10, retries=6)
    for _ in range(2):
        for client in each.values():
            client.sync()
    for (user, _), client in each.items():
        assert rows(client.conn) == pg_hub.rows(f"owner = '{user}'")
    assert {r[1] for r in pg_hub.rows()} == {"alice", "bob"}
    # A client id registered through one process is refused to another user
    # by the other process.
    alice0 = each[("alice", 0)].agent.client.client_id
    r = post(services[1], "/v1/download", wire.encode(DownloadRequest(
        alice0, "notes", [DownloadTable("notes", None)])), token=BOB)
    assert r.status_code == 403 and "is registered to another user" in r.json()["message"]


def test_a_request_stuck_on_a_lock_is_stopped_at_the_time_limit(pg_hub, pg_dsn, pg_service):
    """PostgreSQL's statement_timeout and a cancel at the deadline bound the
    hub work of a request: 503 "timeout", and the service goes on serving."""
    import psycopg
    service = pg_service(request_timeout_s=1.5, busy_timeout_ms=120_000)
    body = wire.encode(DownloadRequest(uuid.uuid4(), "notes", [DownloadTable("notes", None)]))
    with psycopg.connect(pg_dsn) as locker:
        locker.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        r = post(service, "/v1/download", body)
        took = time.monotonic() - started
        assert (r.status_code, r.json()["code"]) == (503, "timeout")
        assert "the request took longer than 1.5 s and was stopped" in r.json()["message"]
        assert took < 10
        locker.rollback()
    r = post(service, "/v1/download", body)
    assert r.status_code == 200


def test_a_lock_held_longer_than_busy_timeout_answers_busy(pg_hub, pg_dsn, pg_service):
    import psycopg
    service = pg_service(busy_timeout_ms=300)
    upload = Upload(uuid.uuid4(), "notes", [TableChanges(
        "notes", ("id", "owner", "body"), ("id",), inserts=[(7, "alice", "x")])],
        {"notes": None})
    with psycopg.connect(pg_dsn) as locker:
        locker.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
        r = post(service, "/v1/upload", wire.encode(upload))
        assert (r.status_code, r.json()["code"]) == (503, "busy")
        assert r.headers["retry-after"] == "1"
        locker.rollback()
    r = post(service, "/v1/upload", wire.encode(upload))
    assert r.status_code == 200 and wire.decode(r.content).applied == 1
    assert pg_hub.rows("id = 7") == [(7, "alice", "x")]


def test_serve_refuses_a_postgresql_hub_without_the_tables(pg_dsn, pg_hub, tmp_path):
    config = default_config(hub=url_of(pg_dsn), tables=["notes", "missing"])
    config["filters"] = {}
    (tmp_path / "server.json").write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, "-m", "sqlite_ct", "serve", "--config",
                           str(tmp_path / "server.json"), "--port", "9"],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode != 0
    assert 'table "missing" does not exist in schema "public"' in proc.stderr


def test_the_clients_remote_errors_stay_the_same(pg_service):
    service = pg_service()
    with HttpServerProvider(service.url, token="forged-token-0123456789", retries=0) as server:
        with pytest.raises(RemoteError) as info:
            server.tables()
    assert info.value.status == 401


def test_an_expired_anchor_says_reinitialise(pg_hub, pg_dsn, pg_service, clients):
    from sqlite_ct.sync.pg import PostgresServerProvider
    service = pg_service()
    alice = clients("alice", service.url, ALICE)
    alice.sync()
    pg_hub.execute("DELETE FROM notes WHERE id = 3")
    with PostgresServerProvider(pg_dsn, max_connections=1) as hub:
        assert hub.purge_tombstones("notes", older_than_days=0) == 1
    with pytest.raises(RemoteError) as info:
        alice.sync()
    assert (info.value.status, info.value.code) == (410, "reinitialise")
    assert "reinitialise the table on the client" in str(info.value)


def test_a_column_added_on_the_hub_reaches_clients_through_http(pg_hub, pg_service, clients):
    service = pg_service()
    alice = clients("alice", service.url, ALICE)
    alice.sync()
    pg_hub.execute("ALTER TABLE notes ADD COLUMN tag text DEFAULT 'none'")
    pg_hub.execute("UPDATE notes SET tag = 'hub' WHERE id = 3")
    alice.sync()
    assert alice.conn.execute("SELECT id, owner, body, tag FROM notes ORDER BY id").fetchall() \
        == pg_hub.execute("SELECT id, owner, body, tag FROM notes WHERE owner = 'alice' "
                          "ORDER BY id") == [(1, "alice", "a1", "none"), (3, "alice", "a2", "hub")]
