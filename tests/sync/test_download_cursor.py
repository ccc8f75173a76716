"""The hub's download cursor keeps the form anchors carry (sqlite_ct/sync/_anchor.py):
phase 0 (delete BSN, the tombstone's packed key), phase 1 (0, packed rowid or
key), phase 2 (change BSN, packed rowid or key). The phases are read through
sqlite_ct_changes(); anchors issued before it, which carry that form, resume
at exactly the next change."""
from __future__ import annotations

import dataclasses
import uuid

import pytest

from sqlite_ct.sync._anchor import PHASE_DELETES, PHASE_STAMPED, PHASE_UNSTAMPED
from sqlite_ct.sync.messages import DownloadRequest, DownloadTable

ROWID = ("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)",
         "INSERT INTO t(id, v) SELECT value, 'old' FROM s WHERE value <= 30")
KEYED = ("CREATE TABLE t(a INTEGER, b TEXT, v TEXT, PRIMARY KEY(b, a)) WITHOUT ROWID",
         "INSERT INTO t(a, b, v) SELECT value % 4, 'k' || (value * 7 % 31), 'old' "
         "FROM s WHERE value <= 30")
SERIES = ("CREATE TEMP VIEW s(value) AS WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL "
          "SELECT value + 1 FROM n WHERE value < 200) SELECT value FROM n")


def changes(batch):
    out = []
    for t in batch.tables:
        out += [("D",) + tuple(k) for k in t.deletes]
        out += [("I",) + tuple(r) for r in t.inserts]
        out += [("U",) + tuple(r) for r in t.updates]
    return out


def read(server, client, anchor, size):
    """Every change from `anchor` on, `size` per batch: the changes and the
    decoded window of each batch's anchor."""
    out, windows, session = [], [], None
    for _ in range(500):
        batch = server.get_changes(DownloadRequest(
            client, "g", [DownloadTable("t", anchor)], batch_size=size, session=session))
        out += changes(batch)
        anchor, session = batch.anchors["t"], batch.session
        windows.append(server.guard.decode(anchor, "t").window)
        if not batch.more:
            return out, anchor, windows
    raise AssertionError("the download does not end")


@pytest.mark.parametrize("schema", [ROWID, KEYED], ids=["rowid", "without rowid"])
def test_cursors_keep_their_form_and_resume_at_the_next_change(conns, schema):
    from sqlite_ct.sync import ServerSyncProvider
    hub = conns()
    hub.execute(SERIES)
    for sql in schema:
        hub.execute(sql)
    server = ServerSyncProvider(hub)
    server.provision("t")
    keyed = "WITHOUT ROWID" in schema[0]
    order = "b, a" if keyed else "id"
    with hub:   # one transaction writes many rows
        hub.execute(schema[1].replace("<= 30", "BETWEEN 31 AND 60").replace("'old'", "'new'"))
    client = uuid.uuid4()
    whole, anchor, _ = read(server, client, None, None)
    first, _, windows = read(server, client, None, 1)
    assert first == whole and len(whole) == 60
    pack = f"sqlite_ct_pack_key({order})"
    unstamped = [r[0] for r in hub.execute(
        f'SELECT {pack} FROM t WHERE "__sysChangeTxBsn" IS NULL ORDER BY {order}')]
    stamped = [tuple(r) for r in hub.execute(
        f'SELECT "__sysChangeTxBsn", {pack} FROM t WHERE "__sysChangeTxBsn" IS NOT NULL '
        f'ORDER BY "__sysChangeTxBsn", {order}')]
    cursors = [(w.phase, w.cursor_bsn, w.cursor_key) for w in windows if w is not None]
    assert cursors[:30] == [(PHASE_UNSTAMPED, 0, k) for k in unstamped]
    assert cursors[30:59] == [(PHASE_STAMPED, b, k) for b, k in stamped[:29]]

    # Then deletes (several in one transaction) and more rows.
    with hub:
        hub.execute("DELETE FROM t WHERE v = 'old' AND " + ("id % 3 = 0" if not keyed else "a = 1"))
        hub.execute("UPDATE t SET v = 'upd' WHERE v = 'new' AND "
                    + ("id % 2 = 0" if not keyed else "a = 2"))
    whole, _, _ = read(server, client, anchor, None)
    first, _, windows = read(server, client, anchor, 1)
    assert first == whole and sum(1 for c in whole if c[0] == "D") >= 5
    tombs = [tuple(r) for r in hub.execute(
        "SELECT __sysDeleteTxBsn, __sysRK FROM __sysOCSDeletedRows ORDER BY 1, 2")]
    deletes = [(w.phase, w.cursor_bsn, w.cursor_key) for w in windows
               if w is not None and w.phase == PHASE_DELETES]
    assert deletes == [(PHASE_DELETES, b, k) for b, k in tombs]

    # An anchor made by hand at any cursor of the documented form resumes
    # with exactly the changes after it.
    for i, w in enumerate(windows[:-1]):
        if w is None:
            continue
        a = server.guard.decode(anchor, "t")
        made = server.guard.encode(dataclasses.replace(a, window=w), "t")
        rest, _, _ = read(server, client, made, None)
        assert rest == first[i + 1:], i


def test_a_table_whose_columns_hide_the_rowid_is_refused_not_sent_empty(conns):
    from sqlite_ct.sync import ServerSyncProvider, SyncError
    hub = conns()
    hub.execute('CREATE TABLE t(k TEXT PRIMARY KEY, "rowid" INT, "_rowid_" INT, "oid" INT)')
    hub.execute("INSERT INTO t(k, \"rowid\", \"_rowid_\", \"oid\") VALUES ('a', 1, 2, 3)")
    server = ServerSyncProvider(hub)
    server.provision("t")
    with pytest.raises(SyncError, match="hide its rowid"):
        read(server, uuid.uuid4(), None, None)
