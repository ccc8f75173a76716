"""The `sqlite-ct` command: a thin layer over the sqlite_ct library.

Every command parses its arguments, opens the database (with apsw when it is
installed, else with the stdlib's sqlite3), loads the extension and calls the
library; the library does the work. docs/cli.md
documents each command, its output formats and its exit codes:

    0  success
    1  an error (named on stderr), or `check` found problems
    2  a usage error (argparse), or the command is not available in this
       version of sqlite-ct
    3  sync: the hub refuses the client's anchors; run `sqlite-ct reinitialise`
    4  sync: the client database is a copy; run `sqlite-ct reidentify`

Errors go to stderr as "sqlite-ct: error: <what is wrong>". Commands that read
(status, changes, check) never create a database file; neither do enable,
disable and purge. Only `sync` creates its client database when missing, the
way a first sync creates the client's tables.

`python3 -m sqlite_ct` runs the same command (sqlite_ct/__main__.py).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import json
import math
import os
import shlex
import sys
import tempfile
import time
import uuid
from typing import (Any, Callable, ContextManager, Dict, Iterable, Iterator, List, Optional,
                    Sequence, TextIO)

import sqlite_ct
from sqlite_ct import TrackingOptions, _conn

PROG = "sqlite-ct"
BUSY_TIMEOUT_MS = 5000

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_UNAVAILABLE = 2

# An apsw.Connection, or a sqlite3.Connection where apsw is not installed
# (sqlite_ct._conn.open_database).
Connection = Any


class CliError(Exception):
    """An error the command reports on stderr before exiting with `code`."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def _strip_prefix(message: str) -> str:
    """Library and extension messages start with "sqlite-ct: " (the sync
    layer's with "sqlite-ct sync: "); the CLI adds its own "sqlite-ct: error: "
    prefix instead."""
    for prefix in ("sqlite-ct: ", "sqlite-ct "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


# --- databases ---------------------------------------------------------------

# The SQLite errors of both hosts (apsw.Error, sqlite3.Error).
HOST_ERRORS = _conn._host_errors()


def open_db(path: str, *, create: bool = False) -> Connection:
    """A connection to `path` with sqlite-ct loaded (apsw, or the stdlib's sqlite3).

    Without `create`, a missing file is an error: a typo in a path must not
    leave an empty database behind."""
    if os.path.isdir(path):
        raise CliError(f'"{path}" is a directory, not a database file')
    if not create and not os.path.exists(path):
        raise CliError(f'database "{path}" does not exist')
    try:
        conn = _conn.open_database(path, create=create, busy_timeout_ms=BUSY_TIMEOUT_MS)
    except HOST_ERRORS as exc:
        raise CliError(f'cannot open database "{path}": {exc}') from exc
    try:
        # Reading the schema fails here, with the file named, for a file that
        # is not a database.
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchall()
    except HOST_ERRORS as exc:
        conn.close()
        raise CliError(f'cannot open database "{path}": {exc}') from exc
    return conn


def transaction(conn: Connection) -> ContextManager[None]:
    """One transaction (a SAVEPOINT) around the block, for either host: all or nothing,
    and one snapshot for what it reads."""
    return _conn.savepoint(conn, "sqlite_ct_cli")


@contextlib.contextmanager
def database(path: str, *, create: bool = False) -> Iterator[Connection]:
    conn = open_db(path, create=create)
    try:
        yield conn
    finally:
        conn.close()


def table_exists(conn: Connection, table: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ? COLLATE NOCASE",
        (table,)).fetchone() is not None


def system_table_exists(conn: Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?",
                        (name,)).fetchone() is not None


def require_tracked_table(conn: Connection, db: str, table: str) -> None:
    """CliError naming the table when it is missing or not tracked."""
    if not table_exists(conn, table):
        raise CliError(f'no such table: "{table}"')
    if not sqlite_ct.is_tracked(conn, table):
        raise CliError(f'table "{table}" is not tracked; run: '
                       f"{PROG} enable {shlex.quote(db)} {shlex.quote(table)}")


# --- values ------------------------------------------------------------------

def json_value(value: Any) -> Any:
    """A column value as JSON: numbers, strings and null as themselves; blobs
    as {"$base64": true, "encoded": "..."} (sqlite-utils' encoding, so
    `sqlite-utils insert` stores them as blobs); infinite reals as
    {"$float": "Infinity"} or {"$float": "-Infinity"} (JSON has no literal for
    them; SQLite stores no NaN)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$base64": True, "encoded": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": "NaN" if math.isnan(value) else
                ("Infinity" if value > 0 else "-Infinity")}
    return value


def json_row(row: Dict[str, Any]) -> Dict[str, Any]:
    return {name: json_value(v) for name, v in row.items()}


def text_value(value: Any, *, blob_limit: Optional[int] = None) -> str:
    """A column value as text: NULL as the empty string, blobs as base64 (CSV)
    or as an SQL blob literal x'..' (tables, truncated to blob_limit bytes)."""
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        if blob_limit is None:
            return base64.b64encode(data).decode("ascii")
        if len(data) > blob_limit:
            return f"x'{data[:blob_limit].hex()}...' ({len(data)} bytes)"
        return f"x'{data.hex()}'"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def render_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain text table: a header, a rule, one line per row."""
    rows = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def write_json(out: TextIO, document: Any) -> None:
    out.write(json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False))
    out.write("\n")


# __sysTrackOpt holds TrackingOptions * 16, as SQL CE stored it, plus this bit
# for tables tracked in portable mode (csrc/sqlite_ct.h, CT_TRACKOPT_PORTABLE).
TRACKOPT_PORTABLE = 0x100


def options_names(track_opt: int) -> List[str]:
    """__sysTrackOpt as the names of the tracked operations."""
    opts = TrackingOptions((track_opt >> 4) & int(TrackingOptions.ALL))
    return [f.name.lower() for f in (TrackingOptions.INSERT, TrackingOptions.UPDATE,
                                     TrackingOptions.DELETE) if f & opts]


def parse_options(text: str) -> TrackingOptions:
    """--options insert,update,delete | all"""
    result = TrackingOptions(0)
    for word in text.split(","):
        word = word.strip().upper()
        if word not in TrackingOptions.__members__:
            raise argparse.ArgumentTypeError(
                f"unknown tracking option {word.lower()!r}; use insert, update, "
                f"delete or all, separated by commas")
        result |= TrackingOptions[word]
    if not result:
        raise argparse.ArgumentTypeError("name at least one tracking option")
    return result


# --- progress ----------------------------------------------------------------

class Progress:
    """A one-line progress display on a stream (stderr), redrawn in place.

    update() draws a bar when the total is known, a counter when it is not.
    Disabled, it draws nothing. Redraws at most every `interval` seconds
    (always for the last step), so a fast loop does not flood a terminal."""

    def __init__(self, stream: TextIO, enabled: bool, *, width: int = 30,
                 interval: float = 0.1) -> None:
        self.stream = stream
        self.enabled = enabled
        self.width = width
        self.interval = interval
        self._last: Optional[float] = None   # the first line is always drawn
        self._shown = 0

    def update(self, label: str, done: int, total: Optional[int], *,
               final: bool = False) -> None:
        if total:
            filled = min(self.width, self.width * done // total)
            bar = "#" * filled + "-" * (self.width - filled)
            self.line(f"{label} [{bar}] {done}/{total}", final=final or done >= total)
        else:
            self.line(f"{label}: {done}", final=final)

    def line(self, text: str, *, final: bool = False) -> None:
        """Show `text` in place of the previous line."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not final and self._last is not None and now - self._last < self.interval:
            return
        self._last = now
        self.stream.write("\r" + text + " " * max(0, self._shown - len(text)))
        self.stream.flush()
        self._shown = len(text)

    def finish(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = 0


class RichProgress:
    """The same interface as Progress, drawn by rich on a terminal: a spinner,
    the current step and the elapsed time. rich redraws it from its own
    thread, so it moves while SQLite works."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import Progress as RichBar
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

        self._bar = RichBar(SpinnerColumn(finished_text="-"), TextColumn("{task.description}"),
                            TimeElapsedColumn(), console=Console(file=stream),
                            transient=False)
        self._task: Optional[Any] = None
        self.enabled = True

    def update(self, label: str, done: int, total: Optional[int], *,
               final: bool = False) -> None:
        self.line(f"{label} {done}/{total}" if total else f"{label}: {done}", final=final)

    def line(self, text: str, *, final: bool = False) -> None:
        if self._task is None:
            self._bar.start()
            self._task = self._bar.add_task(text, total=None)
        else:
            self._bar.update(self._task, description=text)

    def finish(self) -> None:
        if self._task is not None:
            self._bar.update(self._task, total=1, completed=1)
            self._bar.stop()
            self._task = None


def progress_display(stream: TextIO, enabled: bool) -> Any:
    """A RichProgress on a terminal when rich is installed, else a plain Progress
    (disabled: draws nothing)."""
    if enabled and stream.isatty():
        try:
            return RichProgress(stream)
        except ImportError:
            pass
    return Progress(stream, enabled)


@contextlib.contextmanager
def progress_step(bar: Any, label: str) -> Iterator[None]:
    """Show `label` while the block runs (one long SQLite call), then how long it took."""
    start = time.monotonic()
    bar.line(f"{label} ...")
    yield
    bar.line(f"{label}: done in {time.monotonic() - start:.1f} s", final=True)


def _row_count(conn: Connection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {_conn.quote_identifier(table)}").fetchone()[0]


# --- commands ----------------------------------------------------------------

def cmd_enable(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with database(args.db) as conn:
        bar = progress_display(err, err.isatty())
        results = []
        try:
            with transaction(conn):  # every table or none
                for t in args.tables:
                    label = f'enabling tracking on "{t}"'
                    if bar.enabled and table_exists(conn, t):
                        label += f" ({_row_count(conn, t):,} rows)"
                    with progress_step(bar, label):
                        results.append((t, sqlite_ct.create_schema(
                            conn, t, options=args.options, mode=args.mode)))
        finally:
            bar.finish()
    names = options_names(int(args.options) << 4)
    if args.json:
        write_json(out, {"database": args.db, "tables": [
            {"table": table, "options": names, "mode": args.mode, "enable_bsn": bsn}
            for table, bsn in results]})
        return EXIT_OK
    mode = "; portable mode" if args.mode == "portable" else ""
    for table, bsn in results:
        out.write(f'tracking "{table}" (options: {",".join(names)}{mode}; '
                  f'enabled by BSN {bsn})\n')
    return EXIT_OK


def cmd_disable(args: argparse.Namespace, out: TextIO) -> int:
    with database(args.db) as conn:
        with transaction(conn):
            for table in args.tables:
                if not sqlite_ct.is_tracked(conn, table):
                    if not table_exists(conn, table):
                        raise CliError(f'no such table: "{table}"')
                    raise CliError(f'table "{table}" is not tracked')
                sqlite_ct.disable_tracking(conn, table)
    if args.json:
        write_json(out, {"database": args.db, "disabled": list(args.tables)})
        return EXIT_OK
    for table in args.tables:
        out.write(f'stopped tracking "{table}"\n')
    return EXIT_OK


def _pending(conn: Connection, table: str, since: int) -> Dict[str, int]:
    counts = {"inserts": 0, "updates": 0, "deletes": 0}
    with sqlite_ct.iter_changes(conn, table, since) as stream:
        for change in stream:
            counts[change.kind + "s"] += 1
    counts["total"] = counts["inserts"] + counts["updates"] + counts["deletes"]
    return counts


def status_document(conn: Connection, db: str) -> Dict[str, Any]:
    """Everything `status` reports, read in one snapshot; writes nothing (the
    client id is shown only once a sync or client_id() has created it)."""
    with transaction(conn):
        client = None
        if system_table_exists(conn, "__sysSyncSubscriptions"):
            row = conn.execute("SELECT ClientId FROM __sysSyncSubscriptions "
                               "ORDER BY rowid LIMIT 1").fetchone()
            if row is not None and row[0] is not None:
                client = str(uuid.UUID(bytes_le=bytes(row[0])))
        layout = None
        if system_table_exists(conn, "__sysCtMeta"):
            row = conn.execute("SELECT value FROM __sysCtMeta "
                               "WHERE key = 'layout_version'").fetchone()
            layout = None if row is None else row[0]
        tables = []
        for name in sqlite_ct.tracked_tables(conn):
            opt, enable_bsn, min_valid = conn.execute(
                "SELECT __sysTrackOpt, __sysEnableTxBsn, __sysMinValidCsn "
                "FROM __sysOCSTrackedObjects WHERE __sysTName = ?", (name,)).fetchone()
            tombstones = conn.execute(
                "SELECT count(*) FROM __sysOCSDeletedRows WHERE __sysTName = ?",
                (name,)).fetchone()[0]
            entry: Dict[str, Any] = {
                "table": name, "options": options_names(opt),
                "mode": "portable" if opt & TRACKOPT_PORTABLE else "native",
                "enable_bsn": enable_bsn,
                "min_valid_csn": min_valid, "sent_anchor": None, "pending": None,
                "tombstones": tombstones, "problem": None}
            # One table's trouble (gone, disarmed by a rebuild, an anchor below
            # its purged tombstones) is reported on that table: status is what
            # a user runs to find such a table.
            try:
                entry["sent_anchor"] = sqlite_ct.get_sent_anchor(conn, name)
                if not table_exists(conn, name):
                    entry["problem"] = (f'table "{name}" is registered as tracked but '
                                        f"does not exist")
                else:
                    entry["pending"] = _pending(conn, name, entry["sent_anchor"] or 0)
            except sqlite_ct.Error as exc:
                entry["problem"] = _strip_prefix(str(exc))
            tables.append(entry)
        # sqlite_ct_last_committed_csn() fails on a database that never had
        # tracking (no __sysTxCommitSequence); nothing has committed there.
        last = (sqlite_ct.last_committed_csn(conn)
                if system_table_exists(conn, "__sysTxCommitSequence") else 0)
        return {"database": db, "client_id": client, "layout_version": layout,
                "last_committed_csn": last, "tables": tables}


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    with database(args.db) as conn:
        doc = status_document(conn, args.db)
    if args.json:
        write_json(out, doc)
        return EXIT_OK
    out.write(f"database:           {doc['database']}\n")
    out.write(f"client id:          {doc['client_id'] or 'none yet (created by the first sync)'}\n")
    out.write(f"last committed CSN: {doc['last_committed_csn']}\n")
    if not doc["tables"]:
        out.write("tracked tables:     none\n")
        return EXIT_OK
    out.write(f"tracked tables:     {len(doc['tables'])}\n\n")
    rows = []
    for t in doc["tables"]:
        p = t["pending"]
        opts = "all" if len(t["options"]) == 3 else ",".join(t["options"])
        rows.append([t["table"], opts, str(t["enable_bsn"]), str(t["min_valid_csn"]),
                     "none" if t["sent_anchor"] is None else str(t["sent_anchor"]),
                     "?" if p is None else str(p["total"]),
                     "?" if p is None else str(p["inserts"]),
                     "?" if p is None else str(p["updates"]),
                     "?" if p is None else str(p["deletes"]),
                     str(t["tombstones"])])
    out.write(render_table(["table", "options", "enabled_by", "min_valid_csn", "sent_anchor",
                            "pending", "inserts", "updates", "deletes", "tombstones"],
                           rows) + "\n")
    for t in doc["tables"]:
        if t["problem"]:
            out.write(f"\nproblem: {t['problem']}\n")
    return EXIT_OK


def changes_document(cs: sqlite_ct.ChangeSet) -> Dict[str, Any]:
    """The stable JSON shape of `changes --json` (docs/cli.md)."""
    return {"table": cs.table, "since": cs.since, "new_anchor": cs.new_anchor,
            "inserts": [json_row(r) for r in cs.inserts],
            "updates": [json_row(r) for r in cs.updates],
            "deletes": [json_row(r) for r in cs.deletes]}


def write_changes_json(out: TextIO, doc: Dict[str, Any]) -> None:
    """The changes document, one row per line (valid JSON; the whitespace is not
    part of the contract)."""
    dump = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode

    out.write("{\n")
    for key in ("table", "since", "new_anchor"):
        out.write(f"  {dump(key)}: {dump(doc[key])},\n")
    for key in ("inserts", "updates", "deletes"):
        rows = doc[key]
        tail = "," if key != "deletes" else ""
        if not rows:
            out.write(f"  {dump(key)}: []{tail}\n")
            continue
        out.write(f"  {dump(key)}: [\n")
        out.write(",\n".join(f"    {dump(row)}" for row in rows))
        out.write(f"\n  ]{tail}\n")
    out.write("}\n")


def _summary(cs_table: str, since: int, new_anchor: int, n_ins: int, n_upd: int,
             n_del: int) -> str:
    return (f'"{cs_table}" since CSN {since}: {n_ins} insert(s), {n_upd} update(s), '
            f"{n_del} delete(s); new anchor {new_anchor}")


def cmd_changes(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    with database(args.db) as conn:
        require_tracked_table(conn, args.db, args.table)
        columns = sqlite_ct.keys.user_columns(conn, args.table)
        if args.format == "csv":
            # Streamed: one row in memory at a time; the summary goes to stderr
            # so stdout stays pure CSV.
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(["__change"] + columns)
            counts = {"insert": 0, "update": 0, "delete": 0}
            with sqlite_ct.iter_changes(conn, args.table, args.since) as stream:
                for change in stream:
                    counts[change.kind] += 1
                    writer.writerow([change.kind] + [text_value(change.row.get(c))
                                                     for c in columns])
            err.write(_summary(args.table, args.since, stream.new_anchor, counts["insert"],
                               counts["update"], counts["delete"]) + "\n")
            return EXIT_OK
        cs = sqlite_ct.enumerate_changes(conn, args.table, args.since)
    if args.format == "json":
        write_changes_json(out, changes_document(cs))
        return EXIT_OK
    rows = []
    for kind, group in (("insert", cs.inserts), ("update", cs.updates),
                        ("delete", cs.deletes)):
        for row in group:
            rows.append([kind] + [text_value(row[c], blob_limit=16) if c in row else ""
                                  for c in columns])
    if rows:
        out.write(render_table(["change"] + columns, rows) + "\n")
    out.write(_summary(cs.table, cs.since, cs.new_anchor, len(cs.inserts),
                       len(cs.updates), len(cs.deletes)) + "\n")
    return EXIT_OK


def cmd_purge(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    limit = ({"older_than_days": args.older_than_days} if args.older_than_days is not None
             else {"up_to_csn": args.up_to_csn})
    if args.transactions and args.tables:
        raise CliError("purge --transactions takes no table: the transaction sequence "
                       "is shared by all tables", code=2)
    if not args.transactions and not args.tables:
        raise CliError("purge needs a TABLE (tombstones) or --transactions "
                       "(the transaction sequence)", code=2)
    with database(args.db) as conn:
        bar = progress_display(err, err.isatty())
        try:
            if args.transactions:
                with progress_step(bar, "purging the transaction sequence"):
                    n = _library_call(sqlite_ct.purge_transaction_sequence, conn, **limit)
            else:
                with transaction(conn):
                    results = []
                    for table in args.tables:
                        require_tracked_table(conn, args.db, table)
                        with progress_step(bar, f'purging the tombstones of "{table}"'):
                            results.append((table, _library_call(
                                sqlite_ct.purge_tombstones, conn, table, **limit)))
        finally:
            bar.finish()
    if args.transactions:
        if args.json:
            write_json(out, {"database": args.db, "transactions": n})
        else:
            out.write(f"purged {n} transaction sequence row(s)\n")
        return EXIT_OK
    if args.json:
        write_json(out, {"database": args.db,
                         "tombstones": {table: n for table, n in results}})
        return EXIT_OK
    for table, n in results:
        out.write(f'purged {n} tombstone(s) of "{table}"\n')
    return EXIT_OK


def _library_call(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the library, turning its argument errors (ValueError) into CLI errors."""
    try:
        return func(*args, **kwargs)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    check = getattr(sqlite_ct, "check", None)
    if check is None:
        # Validate the database anyway, so a wrong path is still reported as such.
        with database(args.db):
            pass
        raise CliError("check is not available: this version of sqlite-ct has no "
                       "sqlite_ct.check()", code=EXIT_UNAVAILABLE)
    with database(args.db) as conn:
        problems = [problem_document(p) for p in check(conn)]
    if args.json:
        write_json(out, {"database": args.db, "ok": not problems, "problems": problems})
    elif problems:
        for p in problems:
            table, code, message = p["table"], p["code"], p["message"]
            where = f' table "{table}"' if table is not None else ""
            out.write(f"problem [{code}]{where}: {message}\n")
    else:
        out.write("ok\n")
    return EXIT_OK if not problems else EXIT_ERROR


def problem_document(problem: Any) -> Dict[str, Any]:
    """One problem of sqlite_ct.check() as JSON: table (or null), code, message."""
    return {"table": getattr(problem, "table", None),
            "code": getattr(problem, "code", None),
            "message": _strip_prefix(str(getattr(problem, "message", problem)))}


def _remove_database(path: str) -> None:
    """Delete a database file this command created, with its -wal/-shm/-journal."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


def _progress_callback(bar: Progress) -> Callable[[Any], None]:
    """SyncAgent(progress=...): one line, updated after each committed step
    (a table's schema created, a group's upload, each download batch)."""
    def report(event: Any) -> None:
        text = (f"sync {','.join(event.tables)}: uploaded {event.total_uploaded}, "
                f"downloaded {event.total_downloaded}")
        if event.stage.name == "DOWNLOADING_CHANGES":
            text += f" (batch {event.batch}{', more to come' if event.more else ''})"
        bar.line(text, final=not event.more)

    return report


def sync_document(stats: Any, client_db: str, hub_db: str, tables: Sequence[str],
                  client_id: Any) -> Dict[str, Any]:
    """The JSON of `sync --json` (docs/cli.md): the SyncStatistics."""
    def when(t: Any) -> Optional[str]:
        return None if t is None else t.isoformat()

    return {
        "client": client_db, "hub": hub_db, "tables": list(tables),
        "client_id": str(client_id),
        "start_time": when(stats.sync_start_time),
        "complete_time": when(stats.sync_complete_time),
        "uploaded": {"total": stats.total_changes_uploaded,
                     "applied": stats.upload_changes_applied,
                     "failed": stats.upload_changes_failed},
        "downloaded": {"total": stats.total_changes_downloaded,
                       "applied": stats.download_changes_applied,
                       "failed": stats.download_changes_failed,
                       "batches": stats.download_batches},
        "conflicts": [{"type": c.type.value, "stage": c.stage.value, "table": c.table,
                       "key": json_row(c.key),
                       "action": None if c.action is None else c.action.value,
                       "deferred": c.deferred, "transaction": c.transaction}
                      for c in stats.conflicts],
    }


def cmd_sync(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    sync = _sync_module()
    if sync is None:
        raise CliError("sync is not available: this version of sqlite-ct has no "
                       "sqlite_ct.sync package", code=EXIT_UNAVAILABLE)
    if args.hub_db.startswith(("http://", "https://")):
        return cmd_sync_http(args, out, err)
    if args.token is not None:
        raise CliError("--token is for a sync service URL; HUB_DB is a database file", code=2)
    if os.path.abspath(args.client_db) == os.path.abspath(args.hub_db):
        raise CliError("the client and the hub must be different databases", code=2)
    created = not os.path.exists(args.client_db)
    ok = False
    try:
        # The hub first: a wrong hub path must not leave a new client file behind.
        with database(args.hub_db) as hub, database(args.client_db, create=True) as client:
            tables = args.tables or sqlite_ct.tracked_tables(hub)
            if not tables:
                raise CliError(f'the hub "{args.hub_db}" tracks no table; name the tables '
                               f"to sync with --table (the hub starts tracking them)")
            for table in tables:
                if not table_exists(hub, table):
                    raise CliError(f'no such table on the hub "{args.hub_db}": "{table}"')
            stats = _synchronize(sync, client, sync.ServerSyncProvider(hub), tables, args, err)
            client_id = sqlite_ct.client_id(client)
        ok = True
    finally:
        if created and not ok:
            _remove_database(args.client_db)
    if args.json:
        write_json(out, sync_document(stats, args.client_db, args.hub_db, tables, client_id))
        return EXIT_OK
    out.write(f"synced {args.client_db} with {args.hub_db}: {', '.join(tables)}\n")
    write_session(out, stats)
    return EXIT_OK


def _synchronize(sync: Any, client: Any, server: Any, tables: Sequence[str],
                 args: argparse.Namespace, err: TextIO) -> Any:
    """One SyncAgent session of `sync`, with its progress display on a terminal."""
    enabled = args.progress if args.progress is not None else err.isatty()
    bar = progress_display(err, enabled)
    agent = sync.SyncAgent(sync.ClientSyncProvider(client), server, tables,
                           batch_size=args.batch_size, progress=_progress_callback(bar))
    try:
        return agent.synchronize()
    finally:
        bar.finish()


def cmd_sync_http(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`sync CLIENT_DB URL --token TOKEN`: sync with a sync service."""
    import sqlite_ct.sync as sync
    provider = _http_provider(args)
    url = args.hub_db
    created = not os.path.exists(args.client_db)
    ok = False
    try:
        with provider as server:
            # The service first: a wrong URL or token must not leave a new client file.
            offered = server.tables()
            tables = args.tables or list(offered)
            known = {t.lower() for t in offered}
            for table in tables:
                if table.lower() not in known:
                    raise CliError(f'the service at {url} does not serve table "{table}"; '
                                   f"it offers: {', '.join(offered)}")
            with database(args.client_db, create=True) as client:
                stats = _synchronize(sync, client, server, tables, args, err)
                client_id = sqlite_ct.client_id(client)
        ok = True
    finally:
        if created and not ok:
            _remove_database(args.client_db)
    if args.json:
        write_json(out, sync_document(stats, args.client_db, url, tables, client_id))
        return EXIT_OK
    out.write(f"synced {args.client_db} with {url}: {', '.join(tables)}\n")
    write_session(out, stats)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`serve --config FILE`: run the sync service (uvicorn) until interrupted."""
    try:
        import sqlite_ct.server as server
    except ImportError as exc:
        raise CliError(f"the sync service needs starlette and uvicorn ({exc}); install "
                       f"sqlite-ct[server]", code=EXIT_UNAVAILABLE)
    if (args.ssl_certfile is None) != (args.ssl_keyfile is None):
        raise CliError("TLS needs both --ssl-certfile and --ssl-keyfile", code=2)
    for path in (args.ssl_certfile, args.ssl_keyfile):
        if path is not None and not os.path.isfile(path):
            raise CliError(f'no such file: "{path}"', code=2)
    config = server.load_config(args.config)
    server.serve(config, host=args.host, port=args.port, ssl_certfile=args.ssl_certfile,
                 ssl_keyfile=args.ssl_keyfile, log_level=args.log_level)
    return EXIT_OK


def _sync_module() -> Optional[Any]:
    """sqlite_ct.sync when it offers a SyncAgent, else None."""
    try:
        import sqlite_ct.sync as sync
    except ImportError:
        return None
    return sync if hasattr(sync, "SyncAgent") else None


# --- recovery: reinitialise, reidentify -----------------------------------------

# `sync`, `reinitialise` and `reidentify` exit with these when the hub refuses
# the client's state; stderr names the command that recovers.
EXIT_REINITIALISE = 3
EXIT_REIDENTIFY = 4


def recovery_command(command: str, args: argparse.Namespace,
                     tables: Sequence[str] = ()) -> str:
    """The `sqlite-ct reinitialise|reidentify ...` line that answers a refused
    sync of `args`. A token given on the command line is not repeated (it
    would end up in logs); the line says where it goes."""
    words = [PROG, command, args.client_db, args.hub_db]
    for table in tables or args.tables:
        words += ["--table", table]
    line = " ".join(shlex.quote(w) for w in words)
    return line + (" --token TOKEN" if args.token is not None else "")


def with_recovery_hint(command: Callable[..., int], args: argparse.Namespace,
                       out: TextIO, err: TextIO) -> int:
    """Run a sync command; a hub that refuses the client's anchors
    (ReinitialiseRequired) or replica (ReplicaCopied) becomes an error that
    names the command to run, with exit code 3 or 4."""
    sync = _sync_module()
    if sync is None:
        return command(args, out, err)
    try:
        return command(args, out, err)
    except sync.ReplicaCopied as exc:
        raise CliError(f"{_strip_prefix(str(exc))}\n{PROG}: run: "
                       f"{recovery_command('reidentify', args)} (gives {args.client_db} its "
                       f"own client id; unsent changes are kept)", code=EXIT_REIDENTIFY) from exc
    except sync.ReinitialiseRequired as exc:
        table = getattr(exc, "table", None)
        raise CliError(f"{_strip_prefix(str(exc))}\n{PROG}: run: "
                       f"{recovery_command('reinitialise', args, [table] if table else [])} "
                       f"(brings the client back in line with the hub; unsent changes are "
                       f"kept)", code=EXIT_REINITIALISE) from exc


def synced_tables(conn: Connection) -> List[str]:
    """The tables this client database has synced (a received anchor in
    __sysSyncArticles), in the order they were first synced."""
    if not system_table_exists(conn, "__sysSyncArticles"):
        return []
    return [r[0] for r in conn.execute(
        "SELECT TableName FROM __sysSyncArticles WHERE ReceivedAnchor IS NOT NULL "
        "ORDER BY rowid").fetchall()]


@contextlib.contextmanager
def recovery_agent(args: argparse.Namespace, err: TextIO) -> Iterator[Any]:
    """A SyncAgent between the existing CLIENT_DB and HUB_DB (a hub file or
    a sync service URL) over --table, or every table the client has synced;
    its client connection is agent.client.conn."""
    sync = _sync_module()
    if sync is None:
        raise CliError(f"{args.command} is not available: this version of sqlite-ct has no "
                       f"sqlite_ct.sync package", code=EXIT_UNAVAILABLE)
    url = args.hub_db.startswith(("http://", "https://"))
    if not url:
        if args.token is not None:
            raise CliError("--token is for a sync service URL; HUB_DB is a database file",
                           code=2)
        if os.path.abspath(args.client_db) == os.path.abspath(args.hub_db):
            raise CliError("the client and the hub must be different databases", code=2)
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(database(args.client_db))
        tables = list(args.tables) or synced_tables(client)
        if not tables:
            raise CliError(f'the client "{args.client_db}" has not synced any table yet; '
                           f"run: {PROG} sync {shlex.quote(args.client_db)} "
                           f"{shlex.quote(args.hub_db)}")
        if url:
            server = stack.enter_context(_http_provider(args))
            offered = server.tables()
            known = {t.lower() for t in offered}
            for table in tables:
                if table.lower() not in known:
                    raise CliError(f'the service at {args.hub_db} does not serve table '
                                   f'"{table}"; it offers: {", ".join(offered)}')
        else:
            hub = stack.enter_context(database(args.hub_db))
            for table in tables:
                if not table_exists(hub, table):
                    raise CliError(f'no such table on the hub "{args.hub_db}": "{table}"')
            server = sync.ServerSyncProvider(hub)
        bar = progress_display(err, err.isatty())
        stack.callback(bar.finish)
        yield sync.SyncAgent(sync.ClientSyncProvider(client), server, tables,
                             progress=_progress_callback(bar))


def _http_provider(args: argparse.Namespace) -> Any:
    """The HttpServerProvider of a sync service URL (HUB_DB) and --token (or
    SQLITE_CT_TOKEN)."""
    try:
        import sqlite_ct.sync.http as http
    except ImportError as exc:
        raise CliError(f"syncing over HTTP needs httpx ({exc}); install "
                       f"sqlite-ct[server]", code=EXIT_UNAVAILABLE)
    token = args.token if args.token is not None else os.environ.get("SQLITE_CT_TOKEN")
    if not token:
        raise CliError("syncing with a service needs a token: --token TOKEN (or the "
                       "SQLITE_CT_TOKEN environment variable)", code=2)
    try:
        return http.HttpServerProvider(args.hub_db, token=token)
    except ValueError as exc:
        raise CliError(str(exc), code=2)


def write_session(out: TextIO, stats: Any) -> None:
    """A session's SyncStatistics as `sync` prints them."""
    out.write(f"uploaded {stats.total_changes_uploaded} change(s): "
              f"{stats.upload_changes_applied} applied, {stats.upload_changes_failed} failed\n")
    out.write(f"downloaded {stats.total_changes_downloaded} change(s): "
              f"{stats.download_changes_applied} applied, {stats.download_changes_failed} "
              f"failed, in {stats.download_batches} batch(es)\n")
    out.write(f"conflicts: {len(stats.conflicts)}\n")
    for c in stats.conflicts:
        action = "" if c.action is None else f" -> {c.action.value}"
        where = ("" if c.transaction is None
                 else f" [client transaction {c.transaction}]")
        kept = " (kept in the conflict inbox)" if c.deferred else ""
        out.write(f"  {c.type.value} on {c.table} {json.dumps(json_row(c.key))}{where}{action}"
                  + kept + (f" ({c.error})" if getattr(c, "error", None) else "") + "\n")


def cmd_reinitialise(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reinitialise CLIENT_DB HUB_DB|URL`: SyncAgent.reinitialise()."""
    with recovery_agent(args, err) as agent:
        stats = agent.reinitialise()
        tables = [t.name for t in agent.tables]
        client_id = agent.client.client_id
    if args.json:
        write_json(out, sync_document(stats, args.client_db, args.hub_db, tables, client_id))
        return EXIT_OK
    out.write(f"reinitialised {args.client_db} from {args.hub_db}: {', '.join(tables)}\n")
    write_session(out, stats)
    return EXIT_OK


def cmd_reidentify(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`reidentify CLIENT_DB HUB_DB|URL`: SyncAgent.reidentify()."""
    with recovery_agent(args, err) as agent:
        named = {t.name.lower() for t in agent.tables}
        left = [t for t in synced_tables(agent.client.conn) if t.lower() not in named]
        if left:
            # A table synced under the old id and not reinitialised would
            # download its own earlier uploads as another client's changes.
            raise CliError(f"reidentify gives all of {args.client_db} a new client id, so "
                           f"every table it has synced is reinitialised; add "
                           f"{' '.join('--table ' + shlex.quote(t) for t in left)}, or "
                           f"leave out --table")
        previous = agent.client.client_id
        stats = agent.reidentify()
        tables = [t.name for t in agent.tables]
        client_id = agent.client.client_id
    if args.json:
        document = sync_document(stats, args.client_db, args.hub_db, tables, client_id)
        document["previous_client_id"] = str(previous)
        write_json(out, document)
        return EXIT_OK
    out.write(f"{args.client_db} has a new client id: {client_id} (was {previous})\n")
    out.write(f"reinitialised {args.client_db} from {args.hub_db}: {', '.join(tables)}\n")
    write_session(out, stats)
    return EXIT_OK


# --- the conflict inbox ------------------------------------------------------------

def _inbox_provider(conn: Connection) -> Any:
    sync = _sync_module()
    if sync is None or not hasattr(sync.ClientSyncProvider, "conflicts"):
        raise CliError("the conflict inbox is not available: this version of sqlite-ct has "
                       "no sqlite_ct.sync conflict inbox", code=EXIT_UNAVAILABLE)
    return sync.ClientSyncProvider(conn)


def conflict_document(c: Any) -> Dict[str, Any]:
    """One StoredConflict as JSON (docs/cli.md, `conflicts --json`)."""
    return {"id": c.id, "table": c.table, "key": json_row(c.key), "stage": c.stage.value,
            "type": c.type.value, "error": c.error, "time": c.time.isoformat(),
            "transaction": c.transaction,
            "client_row": None if c.client_row is None else json_row(c.client_row),
            "server_row": None if c.server_row is None else json_row(c.server_row)}


def cmd_conflicts(args: argparse.Namespace, out: TextIO) -> int:
    """`conflicts CLIENT_DB`: ClientSyncProvider.conflicts()."""
    with database(args.db) as conn:
        if args.table is not None and not table_exists(conn, args.table):
            raise CliError(f'no such table: "{args.table}"')
        provider = _inbox_provider(conn)
        stored = (provider.conflicts(args.table) if args.transaction is None
                  else provider.conflicts(args.table, transaction=args.transaction))
    if args.json:
        write_json(out, {"database": args.db,
                         "conflicts": [conflict_document(c) for c in stored]})
        return EXIT_OK
    if not stored:
        out.write("no deferred conflicts\n" if args.transaction is None else
                  f"no deferred conflicts of client transaction {args.transaction}\n")
        return EXIT_OK
    out.write(render_table(
        ["id", "table", "key", "stage", "transaction", "type", "time", "error"],
        [[str(c.id), c.table, json.dumps(json_row(c.key), ensure_ascii=False), c.stage.value,
          "" if c.transaction is None else str(c.transaction),
          c.type.value, c.time.isoformat(timespec="seconds"), c.error or ""]
         for c in stored]) + "\n")
    return EXIT_OK


def value_from_json(column: str, value: Any) -> Any:
    """A column value of --row: the encoding of json_value() read back."""
    if isinstance(value, dict):
        if value.get("$base64") is True and isinstance(value.get("encoded"), str) \
                and len(value) == 2:
            try:
                return base64.b64decode(value["encoded"], validate=True)
            except ValueError:
                raise CliError(f'--row: column "{column}": "encoded" is not base64')
        if set(value) == {"$float"} and value["$float"] in ("Infinity", "-Infinity"):
            return float(value["$float"])
        raise CliError(f'--row: column "{column}": an object value must be '
                       f'{{"$base64": true, "encoded": BASE64}} or '
                       f'{{"$float": "Infinity"|"-Infinity"}}')
    if isinstance(value, list):
        raise CliError(f'--row: column "{column}": a value is a number, a string, null, '
                       f'or a blob as {{"$base64": true, "encoded": BASE64}}')
    if isinstance(value, bool):
        return int(value)
    return value


def row_from_json(conn: Connection, text: str, conflict: Any) -> Dict[str, Any]:
    """--row: a full row of the conflict's table, whose key is the conflict's."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise CliError(f"--row is not valid JSON: {exc}")
    if not isinstance(document, dict):
        raise CliError('--row must be a JSON object of the row\'s columns, e.g. '
                       '{"id": 1, "name": "x"}')
    columns = {name.lower(): (name, pk) for name, pk in conn.execute(
        "SELECT name, pk FROM pragma_table_info(?)", (conflict.table,)).fetchall()
        if not name.startswith("__sys")}
    row: Dict[str, Any] = {}
    for given, value in document.items():
        if given.lower() not in columns:
            raise CliError(f'--row: table "{conflict.table}" has no column "{given}"')
        row[columns[given.lower()][0]] = value_from_json(given, value)
    missing = [name for name, _ in columns.values() if name not in row]
    if missing:
        raise CliError(f"--row must be a full row; it lacks: {', '.join(missing)}")
    key = {k.lower(): v for k, v in conflict.key.items()}
    for name, pk in columns.values():
        if pk and name.lower() in key and (row[name] != key[name.lower()]
                                           or type(row[name]) is not type(key[name.lower()])):
            raise CliError(f"--row: the key {json.dumps(json_row(conflict.key))} of "
                           f"conflict {conflict.id} cannot change; the row has "
                           f"{name} = {json.dumps(json_value(row[name]))}")
    return row


def cmd_resolve(args: argparse.Namespace, out: TextIO) -> int:
    """`resolve CLIENT_DB ID`: ClientSyncProvider.resolve_conflict(); `resolve
    CLIENT_DB --transaction N`: ClientSyncProvider.resolve_transaction()."""
    if args.transaction is not None:
        return resolve_transaction(args, out)
    with database(args.db) as conn:
        provider = _inbox_provider(conn)
        with transaction(conn):
            found = [c for c in provider.conflicts() if c.id == args.id]
            if not found:
                raise CliError(f"no deferred conflict {args.id} in {args.db}; list them "
                               f"with: {PROG} conflicts {shlex.quote(args.db)}")
            c = found[0]
            upload = c.stage.value == "UploadingChanges"
            if args.resolution == "take-server" and upload:
                # The hub kept its version and the client has it (or gets
                # it with its next sync); the stored server_row is what the
                # hub had then, and written back it would overwrite a newer
                # version another client made since.
                args.resolution = "leave"
                taken = True
            else:
                taken = False
            if args.resolution == "keep-local":
                row = c.client_row
            elif args.resolution == "take-server":
                row = c.server_row
            elif args.resolution in ("delete", "leave"):
                row = None
            else:
                args.resolution = "row"
                row = row_from_json(conn, args.row, c)
            # A missing image is that side's delete: keeping it deletes the key.
            if args.resolution != "leave" and row is None and c.server_row is not None \
                    and not provider.holds(c.table, c.key):
                raise CliError(
                    f"conflict {c.id}: {c.table} {json.dumps(json_row(c.key))} is not on the "
                    f"client, so deleting it is no change to upload and the hub would keep "
                    f"its row; to apply the hub's row use --take-server (then sync and "
                    f"delete it to remove it from the hub too), or write a row with --row")
            if args.resolution == "leave":
                provider.resolve_conflict(c.id)
            else:
                provider.resolve_conflict(c.id, row, delete=row is None)
    deleted = row is None and args.resolution != "leave"
    if taken:
        args.resolution = "take-server"
    if args.json:
        write_json(out, {"database": args.db, "id": c.id, "table": c.table,
                         "key": json_row(c.key), "resolution": args.resolution,
                         "row": None if row is None else json_row(row),
                         "deleted": deleted})
        return EXIT_OK
    if taken:
        out.write(f"resolved conflict {c.id} (take-server): the hub's version of {c.table} "
                  f"{json.dumps(json_row(c.key))} stands (the client has it, or gets it with "
                  f"its next sync); removed it from the inbox\n")
        return EXIT_OK
    if args.resolution == "leave":
        out.write(f"resolved conflict {c.id} (leave): removed it from the inbox; {c.table} "
                  f"{json.dumps(json_row(c.key))} stays as it is\n")
        return EXIT_OK
    what = (f"deleted {c.table} {json.dumps(json_row(c.key))}" if row is None
            else f"wrote {c.table} {json.dumps(json_row(row))}")
    out.write(f"resolved conflict {c.id} ({args.resolution}): {what} as a local change; "
              f"the next sync uploads it\n")
    return EXIT_OK


_TRANSACTION_USE = {"keep-local": "client", "take-server": "server", "leave": "none"}


def resolve_transaction(args: argparse.Namespace, out: TextIO) -> int:
    """`resolve CLIENT_DB --transaction N`: every conflict of one client
    transaction settled as one local transaction."""
    if args.resolution not in _TRANSACTION_USE:
        raise CliError("--transaction settles every conflict of a client transaction with "
                       "--keep-local, --take-server or --leave; --delete and --row settle "
                       "one conflict: give its ID instead")
    with database(args.db) as conn:
        provider = _inbox_provider(conn)
        with transaction(conn):
            # Only uploads carry a transaction (resolve_transaction).
            entries = [c for c in provider.conflicts(transaction=args.transaction)
                       if c.stage.value == "UploadingChanges"]
            if not entries:
                raise CliError(f"no deferred conflicts of client transaction "
                               f"{args.transaction} in {args.db}; list them with: {PROG} "
                               f"conflicts {shlex.quote(args.db)}")
            use = _TRANSACTION_USE[args.resolution]
            for c in entries:
                row = c.client_row
                if use == "client" and row is None and c.server_row is not None \
                        and not provider.holds(c.table, c.key):
                    raise CliError(
                        f"client transaction {args.transaction}: conflict {c.id}: {c.table} "
                        f"{json.dumps(json_row(c.key))} is not on the client, so deleting it "
                        f"is no change to upload and the hub would keep its row; nothing was "
                        f"written: use --take-server (then sync and delete it to remove it "
                        f"from the hub too), or settle the conflicts one by one with "
                        f"{PROG} resolve {shlex.quote(args.db)} ID")
            settled = provider.resolve_transaction(args.transaction, use)
    done = []
    for c in settled:
        row = c.client_row if use == "client" else None
        done.append((c, row, use == "client" and row is None))
    if args.json:
        write_json(out, {"database": args.db, "transaction": args.transaction,
                         "resolution": args.resolution,
                         "conflicts": [{"id": c.id, "table": c.table, "key": json_row(c.key),
                                        "row": None if row is None else json_row(row),
                                        "deleted": deleted} for c, row, deleted in done]})
        return EXIT_OK
    if use == "none":
        out.write(f"resolved client transaction {args.transaction} (leave): removed "
                  f"{len(done)} conflict(s) from the inbox; the tables stay as they are\n")
    elif use == "server":
        out.write(f"resolved client transaction {args.transaction} (take-server): the hub's "
                  f"version stands (the client has it, or gets it with its next sync); "
                  f"removed {len(done)} conflict(s) from the inbox\n")
    else:
        out.write(f"resolved client transaction {args.transaction} ({args.resolution}): "
                  f"{len(done)} conflict(s) written as one local transaction; the next sync "
                  f"uploads it\n")
    for c, row, deleted in done:
        what = (f"deleted {c.table} {json.dumps(json_row(c.key))}" if deleted
                else f"{c.table} {json.dumps(json_row(c.key))}" if row is None
                else f"wrote {c.table} {json.dumps(json_row(row))}")
        out.write(f"  conflict {c.id}: {what}\n")
    return EXIT_OK


# --- demo ----------------------------------------------------------------------

class Transcript:
    """What the demo prints: SQL it runs and what the library returns."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def heading(self, text: str) -> None:
        self.out.write(f"\n== {text}\n")

    def say(self, text: str) -> None:
        self.out.write(f"{text}\n")

    def sql(self, conn: Connection, statement: str) -> None:
        self.out.write(f"sql> {statement}\n")
        conn.execute(statement)

    def changes(self, cs: sqlite_ct.ChangeSet) -> None:
        self.out.write(f">>> enumerate_changes(conn, {cs.table!r}, since={cs.since})\n")
        for kind, group in (("insert", cs.inserts), ("update", cs.updates),
                            ("delete", cs.deletes)):
            for row in group:
                self.out.write(f"    {kind:<6}  {json.dumps(json_row(row))}\n")
        if not len(cs):
            self.out.write("    (no changes)\n")
        self.out.write(f"    new_anchor = {cs.new_anchor}\n")


def demo_tracking(workdir: str, t: Transcript) -> None:
    """Part one of the demo: track a table, write, enumerate."""
    path = os.path.join(workdir, "app.db")
    t.heading("1. Track a table")
    conn = _conn.open_database(path)
    try:
        t.say(f"database: {path}")
        t.say(f"extension: {sqlite_ct.loadable_path()} (version {sqlite_ct.__version__})")
        t.sql(conn, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                    "qty INTEGER NOT NULL)")
        t.sql(conn, "INSERT INTO items(id, name, qty) VALUES (1, 'apple', 3)")
        bsn = sqlite_ct.create_schema(conn, "items")
        t.say(f">>> sqlite_ct.create_schema(conn, 'items')  ->  enabling BSN {bsn}")
        t.say("    (the row that was already there counts as inserted by the enabling "
              "transaction)")

        t.heading("2. Enumerate from the beginning (anchor 0)")
        cs = sqlite_ct.enumerate_changes(conn, "items", 0)
        t.changes(cs)
        anchor = cs.new_anchor

        t.heading("3. Write: inserts, an update, a delete")
        t.sql(conn, "BEGIN")
        t.sql(conn, "INSERT INTO items(id, name, qty) VALUES (2, 'pear', 5)")
        t.sql(conn, "INSERT INTO items(id, name, qty) VALUES (3, 'fig', 1)")
        t.say(f"    (one BSN per write transaction: current_bsn = {sqlite_ct.current_bsn(conn)})")
        t.sql(conn, "COMMIT")
        t.sql(conn, "UPDATE items SET qty = qty + 2 WHERE id = 1")
        t.sql(conn, "DELETE FROM items WHERE id = 3")
        t.say(f"    last_committed_csn = {sqlite_ct.last_committed_csn(conn)}")

        t.heading(f"4. Enumerate since anchor {anchor}")
        t.say("    pear was inserted after the anchor: an insert; apple existed before: "
              "an update; fig was inserted and deleted after it: nothing")
        cs = sqlite_ct.enumerate_changes(conn, "items", anchor)
        t.changes(cs)
        anchor = cs.new_anchor

        t.heading(f"5. Delete and update after anchor {anchor}, enumerate again")
        t.sql(conn, "DELETE FROM items WHERE id = 2")
        t.sql(conn, "UPDATE items SET name = 'green apple' WHERE id = 1")
        cs = sqlite_ct.enumerate_changes(conn, "items", anchor)
        t.changes(cs)
        tombstones = conn.execute("SELECT count(*) FROM __sysOCSDeletedRows").fetchone()[0]
        t.say(f"    tombstones kept in __sysOCSDeletedRows: {tombstones}")
    finally:
        conn.close()


def demo_sync(workdir: str, t: Transcript) -> None:
    """Part two of the demo: two clients syncing through a hub."""
    t.heading("6. Sync two clients through a hub")
    sync = _sync_module()
    if sync is None:
        t.say("    skipped: this version of sqlite-ct has no sqlite_ct.sync package")
        return
    demo = _sync_demo_run(sync)
    if demo is not None:
        transcript = demo(workdir)
        if isinstance(transcript, str):
            t.out.write(transcript if transcript.endswith("\n") else transcript + "\n")
        elif transcript is not None:
            for line in transcript:
                t.say(str(line))
        return
    conns: Dict[str, Connection] = {}
    try:
        for name in ("hub", "client-a", "client-b"):
            conns[name] = _conn.open_database(os.path.join(workdir, f"{name}.db"))
        hub, a, b = conns["hub"], conns["client-a"], conns["client-b"]
        t.say(f"hub: {os.path.join(workdir, 'hub.db')}; clients: client-a.db, "
              f"client-b.db (empty: their first sync creates the table)")
        t.sql(hub, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                   "qty INTEGER NOT NULL)")
        t.sql(hub, "INSERT INTO items(id, name, qty) VALUES (1, 'apple', 3), (2, 'pear', 5)")

        def synchronize(name: str) -> None:
            agent = sync.SyncAgent(sync.ClientSyncProvider(conns[name]),
                                   sync.ServerSyncProvider(hub), ["items"])
            stats = agent.synchronize()
            t.say(f">>> SyncAgent({name}, hub, ['items']).synchronize()  ->  "
                  f"uploaded {stats.total_changes_uploaded}, "
                  f"downloaded {stats.total_changes_downloaded}, "
                  f"conflicts {len(stats.conflicts)}")

        synchronize("client-a")
        synchronize("client-b")
        t.say("\n-- client A edits offline, then syncs; B then gets A's changes")
        t.sql(a, "INSERT INTO items(id, name, qty) VALUES (3, 'kiwi', 9)")
        t.sql(a, "UPDATE items SET qty = 4 WHERE id = 1")
        synchronize("client-a")
        synchronize("client-b")
        t.say("\n-- client B deletes a row; its sync uploads only that (no echo of "
              "what it downloaded)")
        t.sql(b, "DELETE FROM items WHERE id = 2")
        synchronize("client-b")
        synchronize("client-a")
        t.say("\n-- nothing left to move: no change comes back to where it was made")
        synchronize("client-a")
        synchronize("client-b")
        query = "SELECT id, name, qty FROM items ORDER BY id"
        for name in ("hub", "client-a", "client-b"):
            rows = [tuple(r) for r in conns[name].execute(query)]
            t.say(f"    {name + ':':<10} {rows}")
        same = len({repr([tuple(r) for r in c.execute(query)]) for c in conns.values()}) == 1
        t.say("    all three databases are equal" if same else "    THE DATABASES DIFFER")
        if not same:
            raise CliError("the demo's databases did not converge")
    finally:
        for conn in conns.values():
            conn.close()


def _sync_demo_run(sync: Any) -> Optional[Callable[[str], Any]]:
    """sqlite_ct.sync.demo.run when the sync package ships a demo of its own."""
    try:
        import sqlite_ct.sync.demo as demo
    except ImportError:
        return None
    return getattr(demo, "run", None)


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    t = Transcript(out)
    t.say(f"{PROG} demo: change tracking on SQLite (sqlite-ct {sqlite_ct.__version__})")
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
        if os.listdir(args.dir):
            raise CliError(f'demo directory "{args.dir}" is not empty; name a new or '
                           f"empty directory")
        workdir = args.dir
        cleanup: Optional[tempfile.TemporaryDirectory] = None
    else:
        cleanup = tempfile.TemporaryDirectory(prefix="sqlite-ct-demo-")
        workdir = cleanup.name
    try:
        t.say(f"working directory: {workdir}"
              + ("" if args.dir else " (removed at the end; keep it with --dir DIR)"))
        demo_tracking(workdir, t)
        demo_sync(workdir, t)
        t.say("\ndone.")
    finally:
        if cleanup is not None:
            cleanup.cleanup()
    return EXIT_OK


# --- argument parsing ----------------------------------------------------------

def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument("db", metavar="DB", help="path of an existing SQLite database file")


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}")
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _nonnegative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


MAIN_EPILOG = """\
exit codes:
  0  success (check: no problem found)
  1  an error, named on stderr as "sqlite-ct: error: ..."; check: problems found
  2  a usage error (bad option or argument), or the command is not available
     in this version of sqlite-ct
  3  sync, reinitialise: the hub cannot serve the client from its anchors
     (restored hub, purged tombstones); stderr names the `sqlite-ct
     reinitialise` command to run
  4  sync, reinitialise: the client database is a copy of another client's or
     a restored backup; stderr names the `sqlite-ct reidentify` command to run

databases:
  DB is an existing SQLite database file; no command creates one except sync
  (its client database) and demo. A locked database is waited for up to 5 s.
  The commands use apsw when it is installed, else Python's sqlite3.
  status, changes, check and conflicts do not change your data.

output:
  --json prints one JSON object (every command that prints results has it).
  Progress (enable, purge, sync) is drawn on stderr only when it is a terminal.

Run `sqlite-ct COMMAND --help` for a command's arguments and output."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="SQL Server Compact-style change tracking for SQLite: enable\n"
                    "tracking on tables, see what changed since an anchor, purge old\n"
                    "tracking data, sync a client database with a hub.",
        epilog=MAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"%(prog)s {sqlite_ct.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("enable", help="track changes to tables",
                       description="Track changes to each TABLE (sqlite_ct.create_schema): "
                                   "adds the __sys columns, the triggers and the system "
                                   "tables. Idempotent. All tables are enabled in one "
                                   "transaction: all or none.")
    _add_db(p)
    p.add_argument("tables", metavar="TABLE", nargs="+", help="table to track")
    p.add_argument("--options", type=parse_options, default=TrackingOptions.ALL,
                   metavar="OPS",
                   help="what to track: insert, update, delete, comma-separated, or all "
                        "(default: all)")
    p.add_argument("--mode", choices=["native", "portable"], default="native",
                   help="native (default): triggers call the extension, so connections "
                        "without it cannot write the table; portable: pure-SQL triggers "
                        "that track writers without the extension too")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object: {"database", "tables": [{"table", '
                        '"options", "mode", "enable_bsn"}]}')

    p = sub.add_parser("disable", help="stop tracking tables",
                       description="Stop tracking each TABLE (sqlite_ct.disable_tracking): "
                                   "drops the triggers, the index and the __sys columns, "
                                   "and deletes the table's tombstones and sync anchors. "
                                   "One transaction: all or none.")
    _add_db(p)
    p.add_argument("tables", metavar="TABLE", nargs="+", help="tracked table")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object: {"database", "disabled": [TABLE, ...]}')

    p = sub.add_parser("status", help="tracked tables, anchors, pending changes",
                       description="Show the tracked tables, the last committed CSN, each "
                                   "table's pending local changes since its sent anchor "
                                   "(since 0 if it has none), tombstone counts and the "
                                   "client id. Reads only.")
    _add_db(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("changes", help="what changed in a table since an anchor",
                       description="Print the changes to TABLE committed after anchor "
                                   "--since (sqlite_ct.enumerate_changes): inserts, updates "
                                   "(full rows, user columns only) and deletes (key "
                                   "columns), and the new anchor. Reads only.")
    _add_db(p)
    p.add_argument("table", metavar="TABLE", help="tracked table")
    p.add_argument("--since", type=_nonnegative_int, default=0, metavar="N",
                   help="anchor (a CSN); 0, the default, means since tracking began")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="format", action="store_const", const="json",
                     help='one JSON object (the default): {"table", "since", "new_anchor", '
                          '"inserts": [row], "updates": [row], "deletes": [key]}; rows '
                          'are objects of the user columns; a blob is {"$base64": true, '
                          '"encoded": BASE64} (as sqlite-utils writes and reads it), an '
                          'infinite real {"$float": "Infinity"} or {"$float": "-Infinity"}')
    fmt.add_argument("--csv", dest="format", action="store_const", const="csv",
                     help="CSV: a __change column, then the table's columns")
    fmt.add_argument("--table", dest="format", action="store_const", const="table",
                     help="a text table for reading")
    p.set_defaults(format="json")

    p = sub.add_parser("purge", help="delete old tombstones or transaction records",
                       description="Delete the tombstones of each TABLE "
                                   "(sqlite_ct.purge_tombstones), or with --transactions "
                                   "the transaction sequence records "
                                   "(sqlite_ct.purge_transaction_sequence), older than "
                                   "--older-than-days or up to --up-to-csn. Purging "
                                   "tombstones raises the table's minimum valid anchor: "
                                   "replicas behind it must reinitialise. Purge tombstones "
                                   "first, then transactions.")
    _add_db(p)
    p.add_argument("tables", metavar="TABLE", nargs="*", help="tracked table")
    p.add_argument("--transactions", action="store_true",
                   help="purge __sysTxCommitSequence instead of tombstones (no TABLE)")
    limit = p.add_mutually_exclusive_group(required=True)
    limit.add_argument("--older-than-days", type=_nonnegative_float, metavar="DAYS",
                       help="purge what is older than DAYS days (may be fractional)")
    limit.add_argument("--up-to-csn", type=_nonnegative_int, metavar="N",
                       help="purge what committed at CSN N or earlier")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object: {"database", "tombstones": {TABLE: count}} '
                        'or, with --transactions, {"database", "transactions": count}')

    p = sub.add_parser("check", help="check tracking metadata for consistency",
                       description="Run sqlite_ct.check(): report tracking metadata that "
                                   "does not match the data. Exit code 0 when healthy, 1 "
                                   "when problems were found, 2 when this version of "
                                   "sqlite-ct has no check().")
    _add_db(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("sync", help="sync a client database with a hub database",
                       description="Synchronize CLIENT_DB with HUB_DB (sqlite_ct.sync): "
                                   "upload the client's changes, download everyone "
                                   "else's. CLIENT_DB is created when missing (a first "
                                   "sync creates its tables from the hub's); HUB_DB "
                                   "must exist.")
    p.add_argument("client_db", metavar="CLIENT_DB", help="the client database")
    p.add_argument("hub_db", metavar="HUB_DB",
                   help="the hub (server) database, or the URL of a sync service "
                        "(http:// or https://, see `serve`)")
    p.add_argument("--table", dest="tables", metavar="T", action="append", default=[],
                   help="table to sync (repeat for several; default: every table "
                        "tracked on the hub)")
    progress = p.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="draw a progress bar on stderr (default: when stderr "
                               "is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false",
                          help="never draw a progress bar")
    p.add_argument("--batch-size", type=_positive_int, metavar="N", default=10_000,
                   help="download at most N changes per transaction (default: 10000); "
                        "an interrupted sync resumes after the last batch")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--token", metavar="TOKEN",
                   help="bearer token for a sync service URL (default: the SQLITE_CT_TOKEN "
                        "environment variable)")

    for name, summary, description in (
            ("reinitialise", "bring a client's tables back in line with the hub",
             "Reinitialise CLIENT_DB's tables from HUB_DB (SyncAgent.reinitialise): "
             "upload the client's unsent changes, remove every other row of the tables "
             "on the client, and download everything now in the client's scope. The "
             "answer when sync exits 3 (the hub restored from a backup, tombstones "
             "purged, an anchor it refuses). Unsent local changes are kept."),
            ("reidentify", "give a copied or restored client database its own client id",
             "Give CLIENT_DB a new client id and reinitialise its tables from HUB_DB "
             "(SyncAgent.reidentify): the answer when sync exits 4 because the database "
             "is a copy of another client's (a file copy, a device provisioned from a "
             "synced template) or was restored from a backup. The copy and the original "
             "become two clients that see each other's changes; unsent local changes "
             "are kept and uploaded under the new id.")):
        p = sub.add_parser(name, help=summary, description=description)
        p.add_argument("client_db", metavar="CLIENT_DB", help="the existing client database")
        p.add_argument("hub_db", metavar="HUB_DB",
                       help="the hub database, or the URL of a sync service")
        p.add_argument("--table", dest="tables", metavar="T", action="append", default=[],
                       help="table to reinitialise (repeat for several; default: every "
                            "table the client has synced"
                            + (", which reidentify needs all of)" if name == "reidentify"
                               else ")"))
        p.add_argument("--token", metavar="TOKEN",
                       help="bearer token for a sync service URL (default: the "
                            "SQLITE_CT_TOKEN environment variable)")
        p.add_argument("--json", action="store_true",
                       help="print the session's statistics as JSON (as sync --json"
                            + (', with "previous_client_id")' if name == "reidentify"
                               else ")"))

    p = sub.add_parser("conflicts", help="list the client's deferred conflicts",
                       description="List the conflict inbox of CLIENT_DB "
                                   "(ClientSyncProvider.conflicts): the changes a sync "
                                   "could not apply and deferred, oldest first, with "
                                   "their id (for `resolve`), table, key, stage (which "
                                   "side failed), client transaction (of an upload), "
                                   "conflict type, time and error. Reads only.")
    p.add_argument("db", metavar="CLIENT_DB", help="the client database")
    p.add_argument("--table", metavar="T", help="only the conflicts of table T")
    p.add_argument("--transaction", metavar="N", type=_nonnegative_int,
                   help="only the conflicts of client transaction N (an upload the hub "
                        "refused whole)")
    p.add_argument("--json", action="store_true",
                   help='print one JSON object: {"database", "conflicts": [{"id", "table", '
                        '"key", "stage", "type", "error", "time", "transaction", '
                        '"client_row", "server_row"}]}; values as in changes --json')

    p = sub.add_parser("resolve", help="settle one deferred conflict",
                       description="Settle conflict ID of CLIENT_DB's inbox "
                                   "(ClientSyncProvider.resolve_conflict) and remove it, "
                                   "in one transaction. The row written or deleted is a "
                                   "local change: the next sync uploads it. With "
                                   "--transaction N instead of ID, settle every conflict "
                                   "of client transaction N "
                                   "(ClientSyncProvider.resolve_transaction): the rows "
                                   "written are one local transaction.")
    p.add_argument("db", metavar="CLIENT_DB", help="the client database")
    p.add_argument("id", metavar="ID", type=_nonnegative_int, nargs="?",
                   help="the conflict's id, as `conflicts` lists it")
    p.add_argument("--transaction", metavar="N", type=_nonnegative_int,
                   help="instead of ID: settle every conflict of client transaction N, "
                        "as `conflicts` lists it, as one local transaction (with "
                        "--keep-local, --take-server or --leave)")
    p.set_defaults(usage_error=p.error)
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--keep-local", dest="resolution", action="store_const",
                     const="keep-local",
                     help="write the client's row as it was stored with the conflict "
                          "(delete the key if the client had deleted it)")
    how.add_argument("--take-server", dest="resolution", action="store_const",
                     const="take-server",
                     help="a download's conflict: write the server's row (delete the key "
                          "if the server had deleted it); an upload's: let the hub's version "
                          "stand, writing nothing (the client has it, or gets it with its "
                          "next sync)")
    how.add_argument("--delete", dest="resolution", action="store_const", const="delete",
                     help="delete the row with the conflict's key")
    how.add_argument("--leave", dest="resolution", action="store_const", const="leave",
                     help="write nothing: remove the conflict from the inbox and leave the "
                          "table as it is")
    how.add_argument("--row", metavar="JSON",
                     help='write this full row, a JSON object of every column with the '
                          'conflict\'s key; a blob is {"$base64": true, "encoded": BASE64}')
    p.add_argument("--json", action="store_true",
                   help='print one JSON object: {"database", "id", "table", "key", '
                        '"resolution", "row", "deleted"}; with --transaction {"database", '
                        '"transaction", "resolution", "conflicts": [{"id", "table", "key", '
                        '"row", "deleted"}]}')

    p = sub.add_parser("serve", help="run the HTTP sync service over a hub database",
                       description="Serve a hub database to sync clients over HTTP "
                                   "(sqlite_ct.server.create_app). The JSON configuration "
                                   "names the hub, the tables, their row filters and the "
                                   "clients' tokens, for example "
                                   '{"hub": "hub.db", "tables": ["notes"], '
                                   '"filters": {"notes": "owner = :user"}, '
                                   '"tokens": {"<token>": {"user": "alice"}}}: '
                                   "a client presenting <token> syncs as user alice and "
                                   "reads and writes only the notes rows where owner = "
                                   "'alice'. The hub is a SQLite file or a PostgreSQL "
                                   "URL (postgresql://...). The hub's tables are set up "
                                   "at start. Runs until interrupted.")
    p.add_argument("--config", required=True, metavar="FILE",
                   help="the service's JSON configuration")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on "
                                                       "(default: 127.0.0.1)")
    p.add_argument("--port", type=_nonnegative_int, default=8000,
                   help="port to listen on (default: 8000)")
    p.add_argument("--ssl-certfile", metavar="FILE", help="TLS certificate (PEM); serves https")
    p.add_argument("--ssl-keyfile", metavar="FILE", help="TLS private key (PEM)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (default: info)")

    p = sub.add_parser("demo", help="run a self-contained demo in a temporary directory",
                       description="Create a database in a temporary directory, track a "
                                   "table, write to it, enumerate the changes, and sync "
                                   "two clients through a hub, printing each step.")
    p.add_argument("--dir", metavar="DIR",
                   help="run in DIR (new or empty) and keep the databases there")
    return parser


def main(argv: Optional[Sequence[str]] = None, *, stdout: Optional[TextIO] = None,
         stderr: Optional[TextIO] = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit code."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
            if args.command == "resolve" and (args.id is None) == (args.transaction is None):
                args.usage_error("give a conflict ID or --transaction N (one of them)")
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        if args.command == "enable":
            return cmd_enable(args, out, err)
        if args.command == "disable":
            return cmd_disable(args, out)
        if args.command == "status":
            return cmd_status(args, out)
        if args.command == "changes":
            return cmd_changes(args, out, err)
        if args.command == "purge":
            return cmd_purge(args, out, err)
        if args.command == "check":
            return cmd_check(args, out)
        if args.command == "sync":
            return with_recovery_hint(cmd_sync, args, out, err)
        if args.command == "reinitialise":
            return with_recovery_hint(cmd_reinitialise, args, out, err)
        if args.command == "reidentify":
            return cmd_reidentify(args, out, err)
        if args.command == "conflicts":
            return cmd_conflicts(args, out)
        if args.command == "resolve":
            return cmd_resolve(args, out)
        if args.command == "demo":
            return cmd_demo(args, out)
        if args.command == "serve":
            return cmd_serve(args, out, err)
        raise AssertionError(f"unhandled command {args.command!r}")
    except CliError as exc:
        err.write(f"{PROG}: error: {exc}\n")
        return exc.code
    except sqlite_ct.Error as exc:
        err.write(f"{PROG}: error: {_strip_prefix(str(exc))}\n")
        return EXIT_ERROR
    except HOST_ERRORS as exc:
        err.write(f"{PROG}: error: {exc}\n")
        return EXIT_ERROR
    except BrokenPipeError:
        # `sqlite-ct changes ... | head`: the reader left; not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush is quiet
        # (the recipe of the Python docs, "Note on SIGPIPE").
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
