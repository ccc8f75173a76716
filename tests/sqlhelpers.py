"""Small query helpers the feature tests share, for apsw and stdlib sqlite3
connections alike."""
import sqlite3

import apsw

HOST_ERRORS = (apsw.Error, sqlite3.Error)


def q(conn, sql, params=()):
    """All rows of one statement, as tuples."""
    return [tuple(r) for r in conn.execute(sql, params)]


def val(conn, sql, params=()):
    """The first column of the first row, or None."""
    rows = q(conn, sql, params)
    return rows[0][0] if rows else None


def run(conn, *statements):
    """Run statements one after another."""
    for sql in statements:
        q(conn, sql)


def in_transaction(conn) -> bool:
    if isinstance(conn, apsw.Connection):
        return not conn.get_autocommit()
    return conn.in_transaction


def vm_steps(conn, sql, params=()):
    """Virtual machine instructions (in hundreds) run by `sql` on an apsw
    connection, nested statements included: the progress handler counts the
    whole connection."""
    count = [0]

    def tick():
        count[0] += 1
        return 0
    conn.set_progress_handler(tick, 100)
    try:
        q(conn, sql, params)
    finally:
        conn.set_progress_handler(None, 0)
    return count[0]


# ---- a virtual table that records SQLite's transaction calls (apsw) ----------

TX_METHODS = ("Begin", "Sync", "Commit", "Rollback", "Savepoint", "Release", "RollbackTo")


class TxTable:
    """A writable virtual table (apsw, Python) that records every transaction
    method SQLite calls on it, and its writes as ("write", value). on_sync,
    when set, runs inside xSync (the write path flushes its buffered work
    there)."""

    def __init__(self, log):
        self.log = log
        self.on_sync = None

    def BestIndex(self, *args):
        return None

    def Open(self):
        return EmptyCursor()

    def Disconnect(self):
        pass

    Destroy = Disconnect

    def UpdateInsertRow(self, rowid, fields):
        self.log.append(("write", fields[0]))
        return len(self.log)

    def Sync(self):
        self.log.append(("Sync",))
        if self.on_sync:
            self.on_sync()

    def __getattr__(self, name):
        if name not in TX_METHODS:
            raise AttributeError(name)
        return lambda *args: self.log.append((name,) + args)


class EmptyCursor:
    def Filter(self, *args):
        pass

    def Eof(self):
        return True

    def Close(self):
        pass


class TxModule:
    def __init__(self):
        self.log = []
        self.table = TxTable(self.log)

    def Connect(self, conn, modname, dbname, tabname, *args):
        return "CREATE TABLE x(v)", self.table

    Create = Connect
