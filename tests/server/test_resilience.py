"""A sync survives a killed service and a cut connection, in the middle of an
upload or of a download: the client retries, the service restarts from its
hub database, everything converges, and no upload batch is applied twice
(each batch is one hub transaction: the hub's commit count says so)."""
from __future__ import annotations

import os

from sqlite_ct.sync import SyncProgress, SyncStage

from .conftest import ALICE, BOB, Proxy, connect, rows

ROWS = 1500


def commits(service):
    hub = connect(os.path.join(service.workdir, "hub.db"))
    try:
        return hub.execute("SELECT count(*) FROM __sysTxCommitSequence").fetchone()[0]
    finally:
        hub.close()


def hub_rows(service, where):
    hub = connect(os.path.join(service.workdir, "hub.db"))
    try:
        return rows(hub, where)
    finally:
        hub.close()


def write_many(conn, owner, start=1000):
    """ROWS rows in client transactions of 100 (an upload batch holds whole
    transactions: 500-change batches take five each)."""
    for first in range(0, ROWS, 100):
        conn.execute("WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n "
                     "WHERE i < ?) INSERT INTO notes(id, owner, body) "
                     "SELECT ? + i, ?, 'row ' || i FROM n", (first, first + 99, start, owner))


def test_service_killed_mid_upload_then_restarted(start_service, clients):
    service = start_service()
    proxy = Proxy(service.port)
    alice = clients("alice", proxy.url, ALICE, upload_batch_size=500)
    alice.sync()
    write_many(alice.conn, "alice")
    seen = []

    def on_request(line):
        if b"/v1/upload" in line:
            seen.append(line)
            if len(seen) == 2:          # the second of three batches
                service.kill()
                service.restart_later(0.5)

    proxy.on_request = on_request
    before = commits(service)
    stats = alice.sync()
    proxy.on_request = None
    assert len(seen) >= 4               # three batches and at least one retry
    assert (stats.total_changes_uploaded, stats.upload_changes_applied) == (ROWS, ROWS)
    assert rows(alice.conn) == hub_rows(service, "owner = 'alice'")
    assert commits(service) - before == 3
    proxy.close()


def test_service_killed_mid_download_then_restarted(start_service, clients, tmp_path):
    service = start_service()
    writer = clients("writer", service.url, ALICE)
    writer.sync()
    write_many(writer.conn, "alice")
    writer.sync()
    state = {"killed": False}

    def progress(p: SyncProgress):
        if p.stage is SyncStage.DOWNLOADING_CHANGES and p.batch == 1 and not state["killed"]:
            state["killed"] = True
            service.kill()
            service.restart_later(0.5)

    reader = clients("reader", service.url, ALICE, batch_size=400, progress=progress)
    stats = reader.sync()
    assert state["killed"]
    assert stats.download_batches >= 4
    assert stats.total_changes_downloaded == ROWS + 2
    assert rows(reader.conn) == hub_rows(service, "owner = 'alice'")
    again = reader.sync()
    assert again.total_changes_downloaded == 0


def test_upload_answer_lost_on_a_cut_connection_is_not_applied_twice(start_service, clients):
    service = start_service()
    proxy = Proxy(service.port)
    alice = clients("alice", proxy.url, ALICE, upload_batch_size=500)
    alice.sync()
    write_many(alice.conn, "alice")
    before = commits(service)
    proxy.cut("/v1/upload", keep=0)
    stats = alice.sync()
    assert proxy.cuts == 1
    assert (stats.upload_changes_applied, stats.upload_changes_failed) == (ROWS, 0)
    assert commits(service) - before == 3
    assert rows(alice.conn) == hub_rows(service, "owner = 'alice'")
    proxy.close()


def test_download_cut_mid_answer_resumes_and_converges(start_service, clients):
    service = start_service()
    writer = clients("writer", service.url, BOB)
    writer.sync()
    write_many(writer.conn, "bob")
    writer.sync()
    proxy = Proxy(service.port)
    bob = clients("bob", proxy.url, BOB, batch_size=600)
    proxy.cut("/v1/download", keep=3000)
    stats = bob.sync()
    assert proxy.cuts == 1
    assert stats.total_changes_downloaded == ROWS + 2
    assert rows(bob.conn) == hub_rows(service, "owner = 'bob'")
    proxy.close()


def test_random_edits_and_cut_answers_converge(start_service, clients):
    """Three clients of two users edit at random and sync through a proxy
    that loses every third answer at a random byte; afterwards every client
    equals the hub restricted to its user's rows."""
    import random
    rng = random.Random(20261207)
    service = start_service()
    proxy = Proxy(service.port)
    users = {"alice": ALICE, "bob": BOB}
    team = [clients(f"c{i}", proxy.url, users[u], upload_batch_size=3, batch_size=4)
            for i, u in enumerate(["alice", "bob", "alice"])]
    owners = ["alice", "bob", "alice"]
    for c in team:
        c.sync()
    for step in range(40):
        i = rng.randrange(3)
        c, owner = team[i], owners[i]
        for _ in range(rng.randrange(1, 6)):
            key = rng.randrange(1, 25)
            action = rng.random()
            if action < 0.5:
                c.conn.execute("INSERT OR REPLACE INTO notes(id, owner, body) VALUES (?, ?, ?)",
                               (key, owner, f"c{i} step {step}"))
            elif action < 0.8:
                c.conn.execute("UPDATE notes SET body = ? WHERE id = ?", (f"c{i} {step}", key))
            else:
                c.conn.execute("DELETE FROM notes WHERE id = ?", (key,))
        if step % 3 == 0:
            proxy.cut(rng.choice(["/v1/upload", "/v1/download"]), keep=rng.randrange(0, 400))
        c.sync()
    proxy.armed = None
    for _ in range(2):
        for c in team:
            c.sync()
    assert proxy.cuts >= 5
    for c, owner in zip(team, owners):
        assert rows(c.conn) == hub_rows(service, f"owner = '{owner}'")
    proxy.close()
