"""Several real processes on one database file (DESIGN §4 invariants 1, 3, 4, 8).

Writers are separate interpreters (apsw and stdlib sqlite3 hosts) doing random
inserts, upserts, REPLACEs, key changes, updates and deletes in BEGIN IMMEDIATE
transactions on a WAL file, some rolled back, some statements failing on a
UNIQUE constraint. Meanwhile this process enumerates in a loop and applies each
change set to a replica, which must equal the table of the snapshot it read,
every round. A second test kills a writer with SIGKILL inside a big transaction
and checks that the file's tracking state still matches its committed data.
"""
import json
import os
import random
import signal
import subprocess
import threading
import time

import apsw
import pytest

import sqlite_ct

from ._support import Replica, start_python, table_rows

COLUMNS = ["id", "u", "v"]
KEYS = ["id"]

WRITER_SCRIPT = r"""
import json, random, sys, time
import sqlite_ct

PATH, HOST, SEED, TXNS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
REPLACE = sys.argv[5] == "with-replace"
READER_ANCHOR = sys.argv[6]
rng = random.Random(SEED)

if HOST == "apsw":
    import apsw
    conn = apsw.Connection(PATH)
    sqlite_ct.load(conn)
    conn.setbusytimeout(30000)
    CONSTRAINT = apsw.ConstraintError

    def run(sql, params=()):
        conn.execute(sql, params).fetchall()
        return conn.changes()
else:
    import sqlite3
    sqlite_ct.register_auto_extension()
    conn = sqlite3.connect(PATH, isolation_level=None, timeout=30)
    CONSTRAINT = sqlite3.IntegrityError

    def run(sql, params=()):
        return conn.execute(sql, params).rowcount

run("PRAGMA synchronous=NORMAL")


def key():
    return rng.randrange(40)


OPS = [
    (25, "INSERT INTO t(id, u, v) VALUES (?, ?, ?) "
         "ON CONFLICT(id) DO UPDATE SET v = excluded.v", lambda: (key(), rng.randrange(90), tag())),
    (10, "INSERT OR REPLACE INTO t(id, u, v) VALUES (?, ?, ?)",
         lambda: (key(), rng.randrange(90), tag())),
    (8, "INSERT OR IGNORE INTO t(id, u, v) VALUES (?, ?, ?)",
        lambda: (key(), rng.randrange(90), tag())),
    (25, "UPDATE t SET v = ? WHERE id = ?", lambda: (tag(), key())),
    (5, "UPDATE t SET u = ? WHERE id = ?", lambda: (rng.randrange(90), key())),
    (5, "UPDATE t SET id = ? WHERE id = ?", lambda: (key(), key())),
    (5, "UPDATE t SET v = NULL WHERE id = ?", lambda: (key(),)),
    (15, "DELETE FROM t WHERE id = ?", lambda: (key(),)),
    (2, "DELETE FROM t WHERE id BETWEEN ? AND ? + 3", lambda: (key(),) * 2),
]
if not REPLACE:
    OPS = [op for op in OPS if "REPLACE" not in op[1]]
WEIGHTS = [w for w, _, _ in OPS]
counter = [0]


def tag():
    counter[0] += 1
    return f"{HOST}-{SEED}-{counter[0]}"


def random_op():
    _, sql, params = rng.choices(OPS, WEIGHTS)[0]
    try:
        return run(sql, params())
    except CONSTRAINT:
        return 0  # statement rolled back, transaction goes on


# Blocks until the reader has enumerated past everything committed so far, so
# that it sees this writer's work in steps however fast the writers run.
def wait_for_reader():
    target = sqlite_ct.last_committed_csn(conn)
    deadline = time.monotonic() + 30
    while True:
        try:
            with open(READER_ANCHOR) as f:
                if int(f.read() or 0) >= target:
                    return
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"the reader did not reach CSN {target} in 30 s")
        time.sleep(0.005)


CHECKPOINTS = {TXNS // 4, TXNS // 2, 3 * TXNS // 4}
committed, rolled_back, failed_first = [], 0, 0
for txn in range(TXNS):
    if txn in CHECKPOINTS:
        wait_for_reader()
    run("BEGIN IMMEDIATE")
    for _ in range(rng.randint(1, 6)):
        if rng.random() < 0.1:
            run("SAVEPOINT sp")
            random_op()
            run("ROLLBACK TO sp" if rng.random() < 0.5 else "RELEASE sp")
        else:
            random_op()
    bsn = sqlite_ct.current_bsn(conn)
    if rng.random() < 0.15:
        run("ROLLBACK")
        rolled_back += 1
    else:
        run("COMMIT")
        if bsn is not None:
            committed.append(bsn)
print(json.dumps({"committed": committed, "rolled_back": rolled_back}))
"""

# Commits a few small transactions, reports the committed state, then writes
# in one big transaction until killed.
CRASH_SCRIPT = r"""
import json, sys, time
import sqlite_ct

PATH, HOST, MODE = sys.argv[1:4]
if HOST == "apsw":
    import apsw
    conn = apsw.Connection(PATH)
    sqlite_ct.load(conn)
else:
    import sqlite3
    sqlite_ct.register_auto_extension()
    conn = sqlite3.connect(PATH, isolation_level=None)
conn.execute(f"PRAGMA journal_mode={MODE}").fetchall()
# A tiny page cache makes the big transaction spill pages into the database
# file (rollback journal) or the WAL before COMMIT.
conn.execute("PRAGMA cache_size=10")
conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, u INTEGER UNIQUE, v TEXT)")
sqlite_ct.create_schema(conn, "t")
for i in range(30):
    conn.execute("INSERT INTO t(id, u, v) VALUES (?, ?, ?)", (i, i, f"committed {i}"))
conn.execute("BEGIN")
conn.execute("UPDATE t SET v = v || ' updated' WHERE id % 3 = 0")
conn.execute("DELETE FROM t WHERE id % 5 = 0")
conn.execute("COMMIT")
rows = [list(r) for r in conn.execute("SELECT id, u, v FROM t ORDER BY id")]
print(json.dumps({"rows": rows, "anchor": sqlite_ct.last_committed_csn(conn)}), flush=True)

conn.execute("BEGIN")
conn.execute("DELETE FROM t WHERE id < 10")
conn.execute("UPDATE t SET v = 'uncommitted' WHERE id >= 10")
deadline = time.monotonic() + 30
n = 1000
while time.monotonic() < deadline:
    conn.execute("INSERT INTO t(id, u, v) VALUES (?, ?, ?)", (n, n, "x" * 3000))
    if n % 7 == 0:
        conn.execute("UPDATE t SET v = 'y' WHERE id = ?", (n - 3,))
    if n % 11 == 0:
        conn.execute("DELETE FROM t WHERE id = ?", (n - 5,))
    n += 1
    if n == 1300:
        print("writing", flush=True)
"""


def new_database(path: str) -> None:
    conn = apsw.Connection(path)
    sqlite_ct.load(conn)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, u INTEGER UNIQUE, v TEXT)")
    conn.execute("INSERT INTO t(id, u, v) VALUES (1, 1, 'before tracking'), (2, 2, NULL)")
    assert sqlite_ct.create_schema(conn, "t") == 1
    conn.close()


def publish_anchor(path: str, anchor: int) -> None:
    """Tell the writers how far the reader has enumerated (atomic rename)."""
    with open(path + ".tmp", "w") as f:
        f.write(str(anchor))
    os.replace(path + ".tmp", path)


def read_round(conn, replica: Replica, streaming: bool) -> None:
    """One enumeration, applied; the replica must equal the table of the same
    snapshot (the enumeration's savepoint nests in this read transaction)."""
    conn.execute("BEGIN")
    try:
        if streaming:
            inserts, updates, deletes = [], [], []
            with sqlite_ct.iter_changes(conn, "t", since=replica.anchor) as stream:
                for change in stream:
                    {"insert": inserts, "update": updates, "delete": deletes}[
                        change.kind].append(change.row)
            changes = sqlite_ct.ChangeSet("t", replica.anchor, stream.new_anchor,
                                          inserts, updates, deletes)
        else:
            changes = sqlite_ct.enumerate_changes(conn, "t", since=replica.anchor)
        table = table_rows(conn, "t", COLUMNS, KEYS)
    finally:
        conn.execute("COMMIT")
    replica.apply(changes)
    assert replica.rows == table, f"replica differs from the table at CSN {replica.anchor}"


# INSERT OR REPLACE runs in a variant of its own: with recursive_triggers off
# (the default of every host here) it takes its own code path in the triggers,
# and a defect there (one broke convergence) should not hide how everything
# else behaves under concurrency.
@pytest.mark.parametrize("replace", ["with-replace", "without-replace"])
def test_concurrent_writers_and_a_syncing_reader_converge(db_path, apsw_conn, replace):
    new_database(db_path)
    hosts = ["apsw", "sqlite3", "apsw"]
    txns = 150
    reader_anchor = db_path + ".reader-anchor"
    writers = [start_python(WRITER_SCRIPT, db_path, host, str(seed), str(txns), replace,
                            reader_anchor, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for seed, host in enumerate(hosts, start=1)]
    replica = Replica(KEYS)
    anchors = []
    pace = random.Random(0)
    deadline = time.monotonic() + 60
    try:
        while any(w.poll() is None for w in writers):
            assert time.monotonic() < deadline, "writers did not finish in 60 s"
            read_round(apsw_conn, replica, streaming=len(anchors) % 2 == 1)
            anchors.append(replica.anchor)
            publish_anchor(reader_anchor, replica.anchor)
            # Windows of varying size: from one transaction to dozens.
            time.sleep(pace.uniform(0, 0.08))
    finally:
        outputs = [w.communicate(timeout=60) for w in writers]
    reports = []
    for writer, (stdout, stderr) in zip(writers, outputs):
        assert writer.returncode == 0, f"writer failed ({writer.returncode}):\n{stderr}"
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    read_round(apsw_conn, replica, streaming=False)

    # The reader saw the writers' work in several partial steps, not just the
    # end: each writer waits at three checkpoints until the reader has caught up
    # with it, so this holds however the processes are scheduled.
    final = replica.anchor
    assert len({a for a in anchors if 1 < a < final}) >= 3, anchors

    # One CSN per committed write transaction, none for rolled-back ones, no
    # number handed to two committed transactions, no gaps (a rolled-back
    # transaction's number goes to the next one).
    committed = sorted(b for r in reports for b in r["committed"])
    assert len(committed) == len(set(committed))
    csns = [r[0] for r in apsw_conn.execute(
        "SELECT __sysTxCsn FROM __sysTxCommitSequence ORDER BY 1")]
    assert csns == [1] + committed == list(range(1, final + 1))
    assert sum(r["rolled_back"] for r in reports) > 0
    assert len(committed) > len(hosts) * txns // 2

    # Every stamp belongs to a committed transaction.
    stamps = {r[0] for r in apsw_conn.execute(
        "SELECT __sysChangeTxBsn FROM t UNION SELECT __sysInsertTxBsn FROM t "
        "UNION SELECT __sysDeleteTxBsn FROM __sysOCSDeletedRows")}
    assert stamps - {None} <= set(csns)

    # A replica built in one go from anchor 0 ends at the same table.
    fresh = Replica(KEYS)
    fresh.apply(sqlite_ct.enumerate_changes(apsw_conn, "t", since=0))
    assert fresh.rows == replica.rows == table_rows(apsw_conn, "t", COLUMNS, KEYS)


@pytest.mark.parametrize("host", ["apsw", "sqlite3"])
@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_writer_killed_inside_a_transaction_leaves_consistent_tracking(
        db_path, host, journal_mode):
    writer = start_python(CRASH_SCRIPT, db_path, host, journal_mode,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(30, writer.kill)  # unblocks readline() if it hangs
    watchdog.start()
    try:
        first = writer.stdout.readline()
        progress = writer.stdout.readline()
        # Killed after a random extra part of the big transaction.
        time.sleep(random.uniform(0, 0.05))
        writer.send_signal(signal.SIGKILL)
    finally:
        watchdog.cancel()
        if writer.poll() is None:
            writer.kill()
        _, stderr = writer.communicate(timeout=30)
    assert first and progress == "writing\n", f"the writer failed:\n{first}{stderr}"
    assert writer.returncode == -signal.SIGKILL
    committed = json.loads(first)

    conn = apsw.Connection(db_path)
    try:
        sqlite_ct.load(conn)
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert sqlite_ct.check(conn) == []
        anchor = committed["anchor"]
        assert sqlite_ct.last_committed_csn(conn) == anchor == 32
        expected = {(r[0],): dict(zip(COLUMNS, r)) for r in committed["rows"]}
        assert table_rows(conn, "t", COLUMNS, KEYS) == expected

        # Nothing of the killed transaction survives in the bookkeeping.
        def highest(sql):
            return conn.execute(sql).fetchall()[0][0]
        assert highest("SELECT max(__sysTxCsn) FROM __sysTxCommitSequence") == anchor
        assert highest("SELECT max(__sysChangeTxBsn) FROM t") == anchor
        assert highest("SELECT max(__sysInsertTxBsn) FROM t") <= anchor
        assert highest("SELECT max(__sysDeleteTxBsn) FROM __sysOCSDeletedRows") == anchor

        # Enumeration agrees with the data: from scratch, and from the anchor.
        fresh = Replica(KEYS)
        fresh.apply(sqlite_ct.enumerate_changes(conn, "t", since=0))
        assert fresh.rows == expected
        assert len(sqlite_ct.enumerate_changes(conn, "t", since=anchor)) == 0

        # The next transaction gets the next number and is enumerated.
        conn.execute("UPDATE t SET v = 'after the crash' WHERE id = 11")
        after = sqlite_ct.enumerate_changes(conn, "t", since=anchor)
        assert after.new_anchor == anchor + 1
        assert after.updates == [{"id": 11, "u": 11, "v": "after the crash"}]
        assert after.inserts == after.deletes == []
    finally:
        conn.close()
