"""The "sqlite_ct" logger: INFO records for maintenance (create_schema,
disable_tracking, purges, reconcile's repairs) and for sync (per table counts,
per batch), DEBUG records with the anchors and conflicts; nothing is printed
when the application configures no logging."""
import logging
import subprocess
import sys

import apsw
import pytest

import sqlite_ct
from sqlite_ct import sync

from test_cli import PACKAGE_PARENT


def messages(caplog, level=logging.INFO):
    return [(r.name, r.getMessage()) for r in caplog.records if r.levelno == level]


@pytest.fixture
def info(caplog):
    caplog.set_level(logging.DEBUG, logger="sqlite_ct")
    return caplog


def test_maintenance_is_logged(conn, info):
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    sqlite_ct.create_schema(conn, "t", options=sqlite_ct.TrackingOptions.ALL)
    conn.execute("INSERT INTO t(id, v) VALUES (1, 'a'), (2, 'b')")
    conn.execute("DELETE FROM t WHERE id = 1")
    assert sqlite_ct.purge_tombstones(conn, "t", up_to_csn=3) == 1
    assert sqlite_ct.purge_transaction_sequence(conn, up_to_csn=3) == 2
    conn.execute("ALTER TABLE t RENAME TO u")
    assert sqlite_ct.tracked_tables(conn) == ["u"]
    sqlite_ct.disable_tracking(conn, "u")
    assert messages(info) == [
        ("sqlite_ct.tracking", 'create_schema: tracking "t" (options ALL, native mode), '
                               "enabled by BSN 1"),
        ("sqlite_ct.retention", 'purge_tombstones: purged 1 tombstone(s) of "t" (up to CSN 3); '
                                "the minimum valid anchor is now at least 3"),
        ("sqlite_ct.retention", "purge_transaction_sequence: purged 2 transaction record(s) "
                                "(up to CSN 3)"),
        ("sqlite_ct.reconcile", 'reconcile: table "t" was renamed to "u"; tracking follows it'),
        ("sqlite_ct.tracking", 'disable_tracking: stopped tracking "u"'),
    ]


def test_sync_logs_counts_per_table_and_batch_and_anchors_at_debug(tmp_path, info):
    hub = apsw.Connection(str(tmp_path / "hub.db"))
    client = apsw.Connection(str(tmp_path / "client.db"))
    for c in (hub, client):
        sqlite_ct.load(c)
    hub.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT)")
    hub.execute("INSERT INTO items(id, v) VALUES (1, 'a'), (2, 'b')")
    agent = sync.SyncAgent(sync.ClientSyncProvider(client), sync.ServerSyncProvider(hub),
                           ["items"], batch_size=1)
    agent.synchronize()
    client.execute("UPDATE items SET v = 'c' WHERE id = 1")
    client.execute("DELETE FROM items WHERE id = 2")
    info.clear()
    agent.synchronize()
    cid = sqlite_ct.client_id(client)
    log = "sqlite_ct.sync.agent"
    assert messages(info) == [
        (log, f"sync: client {cid}, tables items"),
        (log, "sync items: upload up to CSN 3: items: 0 insert(s), 1 update(s), "
              "1 delete(s)"),
        (log, "sync items: upload: server applied 2, failed 0, sent back 0 correction(s)"),
        (log, "sync items: download batch 1: no changes; applied 0, failed 0"),
        (log, "sync: done: uploaded 2 (applied 2, failed 0), downloaded 0 (applied 0, "
              "failed 0) in 1 batch(es), 0 conflict(s)"),
    ]
    debug = [m for _, m in messages(info, logging.DEBUG)]
    assert debug[0].startswith("sync items: download from received anchors {'items': '")
    assert debug[1].startswith("sync items: download batch 1: received anchors -> {'items': '")
    for c in (hub, client):
        c.close()


def test_sync_first_batch_and_conflicts_are_logged(tmp_path, info):
    hub = apsw.Connection(str(tmp_path / "hub.db"))
    a = apsw.Connection(str(tmp_path / "a.db"))
    b = apsw.Connection(str(tmp_path / "b.db"))
    for c in (hub, a, b):
        sqlite_ct.load(c)
    hub.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, v TEXT)")
    hub.execute("INSERT INTO items(id, v) VALUES (1, 'a')")
    server = sync.ServerSyncProvider(hub)
    agents = [sync.SyncAgent(sync.ClientSyncProvider(c), server, ["items"]) for c in (a, b)]
    for agent in agents:
        agent.synchronize()
    assert ("sqlite_ct.sync.agent",
            "sync items: first sync of items: tables created or prepared "
            "(items: UPLOAD_EXISTING_OR_CREATE_NEW_TABLE)") in messages(info)
    assert ("sqlite_ct.sync.agent",
            "sync items: download batch 1: items: 1 insert(s), 0 update(s), 0 delete(s); "
            "applied 1, failed 0") in messages(info)
    a.execute("UPDATE items SET v = 'from a' WHERE id = 1")
    b.execute("UPDATE items SET v = 'from b' WHERE id = 1")
    agents[0].synchronize()
    info.clear()
    agents[1].synchronize()
    assert ("sqlite_ct.sync.agent",
            "sync items: upload conflict ClientUpdateServerUpdate on items {'id': 1} -> "
            "Continue") in messages(info, logging.DEBUG)
    for c in (hub, a, b):
        c.close()


def test_nothing_is_printed_without_logging_configuration(tmp_path):
    # The library's NullHandler keeps Python's last-resort handler quiet.
    script = ("import logging, apsw, sqlite_ct\n"
              "logging.getLogger('sqlite_ct').warning('a warning of sqlite-ct')\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={"PYTHONPATH": PACKAGE_PARENT}, timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
