"""The sync service end to end: a real `sqlite-ct serve` process on
127.0.0.1, real clients over HTTP. Scopes bound by the token, credentials,
hostile requests, expired anchors, gzip, the CLI."""
from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import uuid

import httpx
import pytest

from sqlite_ct.sync import DownloadBatch, DownloadRequest, DownloadTable, TableChanges, Upload, wire
from sqlite_ct.sync.http import HttpServerProvider, RemoteError

from .conftest import (ALICE, BOB, EXPIRED, REPO, Service, connect, default_config, make_hub,
                       rows)


@pytest.fixture
def service(start_service):
    return start_service(max_request_bytes=200_000)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One service for the tests that do not change the hub."""
    workdir = str(tmp_path_factory.mktemp("shared"))
    make_hub(workdir)
    service = Service(workdir, default_config(max_request_bytes=200_000)).start()
    yield service
    service.stop()
    service.log.close()


def post(service, path, body, token=ALICE, **headers):
    h = {"Authorization": f"Bearer {token}"} if token else {}
    h.update(headers)
    return httpx.post(service.url + path, content=body, headers=h, timeout=10)


def reply(response):
    return json.loads(response.content)


def test_two_users_each_sync_only_their_own_rows(service, clients):
    alice = clients("alice", service.url, ALICE)
    bob = clients("bob", service.url, BOB)
    alice.sync()
    bob.sync()
    hub = connect(os.path.join(service.workdir, "hub.db"))
    assert rows(alice.conn) == rows(hub, "owner = 'alice'")
    assert rows(bob.conn) == rows(hub, "owner = 'bob'")
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (10, 'alice', 'new')")
    alice.conn.execute("UPDATE notes SET body = 'edited' WHERE id = 1")
    bob.conn.execute("DELETE FROM notes WHERE id = 4")
    for c in (alice, bob, alice, bob):
        c.sync()
    assert rows(alice.conn) == rows(hub, "owner = 'alice'") == [
        (1, "alice", "edited"), (3, "alice", "a2"), (10, "alice", "new")]
    assert rows(bob.conn) == rows(hub, "owner = 'bob'") == [(2, "bob", "b1")]
    quiet = alice.sync()
    assert (quiet.total_changes_uploaded, quiet.total_changes_downloaded) == (0, 0)
    hub.close()


def test_a_user_cannot_read_another_users_rows(service, clients):
    alice = clients("alice", service.url, ALICE)
    alice.sync()
    bob = clients("bob", service.url, BOB)
    bob.sync()
    # Asking for bob's filter parameters with alice's token.
    request = DownloadRequest(alice.agent.client.client_id, "notes",
                              [DownloadTable("notes", None)], None, {"user": "bob"})
    r = post(service, "/v1/download", wire.encode(request))
    assert r.status_code == 403 and reply(r)["code"] == "forbidden"
    assert 'filter parameter "user" is set by the service' in reply(r)["message"]
    # Presenting bob's client id with alice's token.
    request = DownloadRequest(bob.agent.client.client_id, "notes",
                              [DownloadTable("notes", None)])
    r = post(service, "/v1/download", wire.encode(request))
    assert r.status_code == 403
    assert "is registered to another user" in reply(r)["message"]
    # A table the service does not serve (the hub's own bookkeeping included).
    request = DownloadRequest(uuid.uuid4(), "x", [DownloadTable("__sysSyncClientOwners", None)])
    r = post(service, "/v1/download", wire.encode(request))
    assert r.status_code == 403 and "is not served here" in reply(r)["message"]
    # Sending her own parameter again is allowed and changes nothing.
    with HttpServerProvider(service.url, token=ALICE) as server:
        batch = server.get_changes(DownloadRequest(
            uuid.uuid4(), "notes", [DownloadTable("notes", None)], None, {"user": "alice"}))
    assert {r[1] for r in batch.tables[0].inserts} == {"alice"}


def test_a_user_cannot_write_another_users_rows(service, clients):
    alice = clients("alice", service.url, ALICE)
    alice.sync()
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (2, 'alice', 'taken')")
    alice.conn.execute("INSERT INTO notes(id, owner, body) VALUES (20, 'bob', 'planted')")
    stats = alice.sync()
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (0, 2)
    assert all(c.error.startswith("refused:") and c.server_row is None
               for c in stats.conflicts)
    hub = connect(os.path.join(service.workdir, "hub.db"))
    assert rows(hub) == [(1, "alice", "a1"), (2, "bob", "b1"), (3, "alice", "a2"),
                         (4, "bob", "b2")]
    assert rows(alice.conn) == rows(hub, "owner = 'alice'")
    # A hand-made upload deleting bob's row under alice's client id.
    with HttpServerProvider(service.url, token=ALICE) as server:
        result = server.apply_changes(Upload(
            alice.agent.client.client_id, "notes",
            [TableChanges("notes", ("id", "owner", "body"), ("id",), deletes=[(2,)])],
            {"notes": None}))
    assert (result.applied, result.failed) == (0, 1)
    assert rows(hub, "id = 2") == [(2, "bob", "b1")]
    hub.close()


@pytest.mark.parametrize("headers, code, message", [
    ({}, "unauthorized", "no credentials: send Authorization: Bearer <token>"),
    ({"Authorization": "Basic YWxpY2U6eA=="}, "unauthorized", "expected Authorization: Bearer"),
    ({"Authorization": "Bearer forged-token-0123456789"}, "unauthorized", "unknown token"),
    ({"Authorization": f"Bearer {ALICE}x"}, "unauthorized", "unknown token"),
    ({"Authorization": f"Bearer {EXPIRED}"}, "token_expired", "the token has expired"),
])
def test_missing_forged_and_expired_tokens_get_401(shared, headers, code, message):
    r = httpx.get(shared.url + "/v1/info", headers=headers, timeout=10)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert reply(r)["code"] == code and reply(r)["message"].startswith(message)


def test_the_client_raises_remote_error_for_credentials(service, clients):
    client = clients("carol", service.url, EXPIRED)
    with pytest.raises(RemoteError) as info:
        client.sync()
    assert (info.value.status, info.value.code) == (401, "token_expired")


def valid_upload():
    return Upload(uuid.uuid4(), "notes",
                  [TableChanges("notes", ("id", "owner", "body"), ("id",),
                                inserts=[(100, "alice", "x")])], {"notes": None})


def bomb():
    return gzip.compress(b" " * 5_000_000)


@pytest.mark.parametrize("body, headers, status, code", [
    (b"not json", {}, 400, "malformed"),
    (b"[" * 100_000, {}, 400, "malformed"),
    (b'{"v": 1, "type": "Upload"}', {}, 400, "unsupported_version"),
    (wire.encode(valid_upload()).replace(b'"x"]', b'"x", 5]'), {}, 400, "malformed"),
    (wire.encode(valid_upload()).replace(b'"table":"notes"', b'"table":""'), {}, 400,
     "malformed"),
    (wire.encode(valid_upload())[:-5], {}, 400, "malformed"),
    (b'{"v":1,"type":"Upload"' + b", " * 150_000 + b"}", {}, 413, "too_large"),
    (b"x" * 300_000, {}, 413, "too_large"),
    (None, {"Content-Encoding": "gzip"}, 413, "too_large"),
    (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}, 400, "malformed"),
    (gzip.compress(wire.encode(valid_upload()))[:-8], {"Content-Encoding": "gzip"}, 400,
     "malformed"),
    (b"{}", {"Content-Encoding": "br"}, 415, "unsupported_encoding"),
    (wire.encode(wire.SchemaRequest(("notes",))), {}, 400, "malformed"),
])
def test_hostile_requests_get_4xx_and_the_service_stays_up(shared, body, headers, status,
                                                           code):
    r = post(shared, "/v1/upload", bomb() if body is None else body, **headers)
    assert (r.status_code, reply(r)["code"]) == (status, code), r.content
    assert httpx.get(shared.url + "/healthz", timeout=5).json() == {"status": "ok"}


def test_wrong_tables_paths_and_methods(shared):
    upload = valid_upload()
    bad = Upload(upload.client_id, "g", [TableChanges("secrets", ("id",), ("id",),
                                                     inserts=[(1,)])], {})
    r = post(shared, "/v1/upload", wire.encode(bad))
    assert (r.status_code, reply(r)["code"]) == (403, "forbidden")
    r = post(shared, "/v1/upload", wire.encode(Upload(
        upload.client_id, "g", [TableChanges("notes", ("id", "nope"), ("id",),
                                             inserts=[(1, 2)])], {})))
    assert (r.status_code, reply(r)["code"]) == (422, "sync_error")
    assert "has no column 'nope'" in reply(r)["message"]
    wipe = Upload(upload.client_id, "g", [TableChanges("notes", ("id", "owner", "body"),
                                                      ("id",), reset=True)], {})
    r = post(shared, "/v1/upload", wire.encode(wipe))
    assert (r.status_code, reply(r)["code"]) == (422, "sync_error")
    assert "uploads cannot reset tables" in reply(r)["message"]
    hub = connect(os.path.join(shared.workdir, "hub.db"))
    assert len(rows(hub)) == 4
    hub.close()
    r = httpx.get(shared.url + "/v2/nothing", timeout=5)
    assert (r.status_code, reply(r)["code"]) == (404, "not_found")
    r = httpx.get(shared.url + "/v1/upload", timeout=5)
    assert (r.status_code, reply(r)["code"]) == (405, "method_not_allowed")
    r = post(shared, "/v1/download", wire.encode(DownloadRequest(
        uuid.uuid4(), "g", [DownloadTable("notes", b"forged anchor")])))
    assert r.status_code in (410, 422) and reply(r)["code"] in ("reinitialise", "sync_error")


def test_an_expired_anchor_says_reinitialise(service, clients):
    alice = clients("alice", service.url, ALICE)
    alice.sync()
    hub = connect(os.path.join(service.workdir, "hub.db"))
    hub.execute("DELETE FROM notes WHERE id = 3")
    import sqlite_ct
    sqlite_ct.purge_tombstones(hub, "notes", up_to_csn=sqlite_ct.last_committed_csn(hub))
    hub.close()
    with pytest.raises(RemoteError) as info:
        alice.sync()
    assert (info.value.status, info.value.code) == (410, "reinitialise")
    assert "reinitialise" in str(info.value)


def test_answers_are_gzipped_when_asked(service):
    body = wire.encode(wire.SchemaRequest(("notes",)))
    r = httpx.post(service.url + "/v1/schema", content=body,
                   headers={"Authorization": f"Bearer {ALICE}", "Accept-Encoding": "gzip"})
    assert r.status_code == 200
    big = DownloadRequest(uuid.uuid4(), "notes", [DownloadTable("notes", None)])
    hub = connect(os.path.join(service.workdir, "hub.db"))
    hub.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) "
                "INSERT INTO notes(owner, body) SELECT 'alice', printf('%0500d', i) FROM n")
    hub.close()
    raw = httpx.post(service.url + "/v1/download", content=wire.encode(big),
                     headers={"Authorization": f"Bearer {ALICE}", "Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert len(wire.decode(raw.content, DownloadBatch).tables[0].inserts) == 22
    plain = httpx.post(service.url + "/v1/download", content=wire.encode(big),
                       headers={"Authorization": f"Bearer {ALICE}",
                                "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "sqlite_ct", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO, **(env or {})))


def test_cli_sync_with_a_url(service, tmp_path):
    db = str(tmp_path / "cli.db")
    proc = run_cli("sync", db, service.url, "--token", BOB)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"synced {db} with {service.url}: notes\n")
    conn = connect(db)
    assert rows(conn) == [(2, "bob", "b1"), (4, "bob", "b2")]
    conn.close()
    proc = run_cli("sync", db, service.url, "--json", env={"SQLITE_CT_TOKEN": BOB})
    assert proc.returncode == 0 and json.loads(proc.stdout)["tables"] == ["notes"]


@pytest.mark.parametrize("args, message", [
    (["--token", "forged-token-0123456789"], "answered 401 unauthorized: unknown token"),
    (["--token", BOB, "--table", "secrets"], 'does not serve table "secrets"; it offers: notes'),
    ([], "syncing with a service needs a token"),
])
def test_cli_sync_failures_exit_non_zero_with_a_message(shared, tmp_path, args, message):
    db = str(tmp_path / "cli.db")
    proc = run_cli("sync", db, shared.url, *args, env={"SQLITE_CT_TOKEN": ""})
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not os.path.exists(db)


def test_cli_serve_with_a_bad_configuration(tmp_path):
    (tmp_path / "server.json").write_text('{"hub": "hub.db", "tables": []}')
    proc = run_cli("serve", "--config", str(tmp_path / "server.json"))
    assert proc.returncode == 1
    assert proc.stderr == ('sqlite-ct: error: config "tables": expected a non-empty list of '
                           "table names\n")


def test_cli_sync_to_an_unreachable_service(tmp_path):
    proc = run_cli("sync", str(tmp_path / "c.db"), "http://127.0.0.1:9", "--token", BOB)
    assert proc.returncode == 1
    assert "failed after" in proc.stderr and "nothing was lost" in proc.stderr


def test_a_request_that_never_ends_is_stopped_by_the_watchdog(start_service):
    """A request whose hub work never ends (here a row filter that never
    finishes: a configuration mistake, or a pathological query plan) is
    interrupted after request_timeout_s: 503, and the service goes on
    serving."""
    endless = ("owner = :user AND (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL "
               "SELECT x + 1 FROM c) SELECT max(x) FROM c) > 0")
    service = start_service(request_timeout_s=1.5, filters={"notes": endless})
    request = DownloadRequest(uuid.uuid4(), "notes", [DownloadTable("notes", None)])
    with HttpServerProvider(service.url, token=ALICE, retries=0) as server:
        with pytest.raises(RemoteError) as info:
            server.get_changes(request)
        assert (info.value.status, info.value.code) == (None, "unreachable")
        assert "503 the request took longer than 1.5 s and was stopped" in str(info.value)
        assert server.tables() == ("notes",)
    r = post(service, "/v1/download", wire.encode(request))
    assert (r.status_code, reply(r)["code"]) == (503, "timeout")


def test_a_body_that_never_arrives_gets_408(start_service):
    service = start_service(request_timeout_s=1)
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as s:
        s.sendall(b"POST /v1/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                  b"Authorization: Bearer " + ALICE.encode() + b"\r\n\r\n{\"v\": 1")
        answer = b""
        while b"}" not in answer:
            data = s.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"timeout"' in answer
    assert httpx.get(service.url + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("url", ["http://", "https://", "https://:80/x"])
def test_cli_sync_refuses_a_malformed_url_at_once(tmp_path, url):
    proc = run_cli("sync", str(tmp_path / "c.db"), url, "--token", BOB)
    assert proc.returncode == 2
    assert "not an http:// or https:// URL with a host" in proc.stderr
