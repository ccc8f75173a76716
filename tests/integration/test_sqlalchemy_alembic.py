"""SQLAlchemy and Alembic on tracked databases, with the real libraries.

enable(engine) loads sqlite-ct into every pooled connection (this
interpreter's sqlite3 cannot load extensions, so that goes through
register_auto_extension(), in a fresh interpreter where it matters). Alembic
runs as its own command line (`python3 -m alembic`) in a project made by
`alembic init`, with an env.py that uses the filters and enable().
"""
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest

import sqlite_ct

from ._support import PACKAGE_PARENT, describe, run_python, run_python_unchecked

sqlalchemy = pytest.importorskip("sqlalchemy", reason="SQLAlchemy is not installed")
pytest.importorskip("alembic", reason="Alembic is not installed")

from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine  # noqa: E402
from sqlalchemy.pool import QueuePool  # noqa: E402

from sqlite_ct.integrations import sqlalchemy as ct_sqlalchemy  # noqa: E402

NO_LOAD_EXTENSION = not hasattr(sqlite3.Connection, "enable_load_extension")


def trigger_names(conn, table):
    return sorted(r[0] for r in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type='trigger' AND tbl_name=?", (table,)))


ARMED = ["__sysct_ad_items", "__sysct_ai_items", "__sysct_ak_items", "__sysct_au_items"]


# --- enable(engine) ---------------------------------------------------------------

def test_enable_loads_the_extension_on_every_pooled_connection(db_path):
    engine = create_engine(f"sqlite:///{db_path}", poolclass=QueuePool, pool_size=2,
                           max_overflow=4)
    ct_sqlalchemy.enable(engine)
    ct_sqlalchemy.enable(engine)  # idempotent
    assert ct_sqlalchemy.is_enabled(engine)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
        sqlite_ct.create_schema(ct_sqlalchemy.dbapi_connection(c), "items")
    # Five connections open at once: the pool's two and three overflow ones,
    # each opened from a thread of its own (sqlite3 connections are per thread).
    barrier = threading.Barrier(5)
    loaded, errors = [], []

    def work(i):
        try:
            with engine.connect() as c:
                barrier.wait(timeout=30)
                loaded.append(sqlite_ct.is_loaded(ct_sqlalchemy.dbapi_connection(c)))
                with c.begin():
                    c.exec_driver_sql("INSERT INTO items(id, name) VALUES (?, ?)", (i, f"n{i}"))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(1, 6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert loaded == [True] * 5
    assert engine.pool.checkedin() >= 2
    with engine.connect() as c:
        changes = sqlite_ct.enumerate_changes(ct_sqlalchemy.dbapi_connection(c), "items", since=0)
    assert sorted(r["id"] for r in changes.inserts) == [1, 2, 3, 4, 5]
    engine.dispose()


ENABLE_SCRIPT = r"""
import json, sys
import sqlite_ct
from sqlalchemy import create_engine
from sqlite_ct.integrations import sqlalchemy as ct_sqlalchemy

engine = create_engine(f"sqlite:///{sys.argv[1]}")
if sys.argv[2] == "late":
    engine.connect().close()  # the pool keeps a connection opened before enable()
ct_sqlalchemy.enable(engine)
try:
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT)")
        sqlite_ct.create_schema(ct_sqlalchemy.dbapi_connection(c), "items")
        c.exec_driver_sql("INSERT INTO items(id, name) VALUES (1, 'one')")
    with engine.connect() as c:
        changes = sqlite_ct.enumerate_changes(ct_sqlalchemy.dbapi_connection(c), "items", since=0)
    print(json.dumps({"inserts": changes.inserts}))
except sqlite_ct.ExtensionError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def test_enable_in_a_fresh_interpreter_whose_sqlite3_cannot_load_extensions(db_path):
    # Nothing registered the extension before enable(): the interpreter is new.
    out = run_python(ENABLE_SCRIPT, db_path, "early")
    assert out == {"inserts": [{"id": 1, "name": "one"}]}


@pytest.mark.skipif(not NO_LOAD_EXTENSION, reason="this Python's sqlite3 loads extensions "
                                                  "into open connections")
def test_a_connection_pooled_before_enable_is_refused_not_used_untracked(db_path):
    out = run_python(ENABLE_SCRIPT, db_path, "late")
    assert out == {"error": (
        "sqlite-ct: this SQLAlchemy connection was opened before sqlite-ct was registered, "
        "and this Python's sqlite3 cannot load extensions into an open connection; call "
        "sqlite_ct.register_auto_extension() (or import the integration) before the first "
        "connection is opened")}


def test_enable_refuses_an_engine_that_is_not_stdlib_sqlite3():
    engine = create_engine("postgresql+psycopg://user@127.0.0.1/db")  # never connects
    with pytest.raises(sqlite_ct.ExtensionError) as info:
        ct_sqlalchemy.enable(engine)
    assert str(info.value) == (
        "sqlite-ct: enable() supports SQLite engines on the stdlib sqlite3 driver "
        "(sqlite:// or sqlite+pysqlite://), not postgresql+psycopg")
    with pytest.raises(TypeError):
        ct_sqlalchemy.enable("sqlite://")


def tracked_engine(db_path):
    engine = create_engine(f"sqlite:///{db_path}")
    ct_sqlalchemy.enable(engine)
    metadata = MetaData()
    items = Table("items", metadata, Column("id", Integer, primary_key=True),
                  Column("name", String))
    metadata.create_all(engine)
    with engine.begin() as c:
        sqlite_ct.create_schema(ct_sqlalchemy.dbapi_connection(c), "items")
        c.exec_driver_sql("INSERT INTO items(id, name) VALUES (1, 'one'), (2, 'two')")
    return engine, metadata, items


def test_dropping_a_tracked_table_through_sqlalchemy_is_refused(db_path, sqlite3_conn):
    engine, metadata, items = tracked_engine(db_path)
    message = ('sqlite-ct: refusing to drop tracked table "items" through SQLAlchemy: a '
               'table created in its place would not be tracked (pandas '
               'to_sql(if_exists="replace") drops and re-creates the table). To replace '
               'the rows, use if_exists="delete_rows" or '
               'sqlite_ct.integrations.pandas.to_sql(); to drop the table, call '
               'sqlite_ct.disable_tracking(conn, "items") first')
    with pytest.raises(sqlite_ct.TableError) as info:
        metadata.drop_all(engine)
    assert str(info.value) == message
    with pytest.raises(sqlite_ct.TableError):
        items.drop(engine)
    assert trigger_names(sqlite3_conn, "items") == ARMED
    assert sqlite3_conn.execute("SELECT count(*) FROM items").fetchone()[0] == 2
    # After disable_tracking() it is an ordinary table again.
    with engine.begin() as c:
        sqlite_ct.disable_tracking(ct_sqlalchemy.dbapi_connection(c), "items")
    metadata.drop_all(engine)
    assert sqlite3_conn.execute("SELECT count(*) FROM sqlite_schema WHERE name='items'"
                                ).fetchone()[0] == 0
    # Engines that were not enabled are left alone.
    other = MetaData()
    Table("plain", other, Column("id", Integer, primary_key=True))
    plain_engine = create_engine(f"sqlite:///{db_path}")
    other.create_all(plain_engine)
    other.drop_all(plain_engine)
    engine.dispose()
    plain_engine.dispose()


# --- Alembic, through its command line ---------------------------------------------

MODELS = """
from sqlalchemy import Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    {extra}
"""

ENV = """
from alembic import context
from sqlalchemy import create_engine

from sqlite_ct.integrations import alembic as sqlite_ct_alembic
from sqlite_ct.integrations import sqlalchemy as sqlite_ct_sqlalchemy
from models import Base

FILTERS = {filters}
ENABLE = {enable}

engine = create_engine(context.config.get_main_option("sqlalchemy.url"))
if ENABLE:
    sqlite_ct_sqlalchemy.enable(engine)
else:
    import sqlite_ct
    from sqlalchemy import event
    sqlite_ct.register_auto_extension()
    event.listen(engine, "connect", lambda dbapi, record: sqlite_ct.load(dbapi))
options = {{}}
if FILTERS:
    options = dict(include_name=sqlite_ct_alembic.include_name,
                   include_object=sqlite_ct_alembic.include_object)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=True, **options)
    with context.begin_transaction():
        context.run_migrations()
"""

FIRST_MIGRATION = '''
"""items, tracked"""
import sqlalchemy as sa
from alembic import op

import sqlite_ct

revision = "0001"
down_revision = None


def upgrade():
    op.create_table("items", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String, nullable=False))
    sqlite_ct.create_schema(op.get_bind().connection.driver_connection, "items")


def downgrade():
    op.drop_table("items")
'''

BATCH_MIGRATION = '''
"""items.qty, by a table rebuild"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    with op.batch_alter_table("items", recreate="always") as batch:
        batch.add_column(sa.Column("qty", sa.Integer, nullable=False, server_default="0"))
    # Writes in the same migration, right after the rebuild.
    op.execute("INSERT INTO items(id, name, qty) VALUES (10, 'from the migration', 1)")
    op.execute("UPDATE items SET name = 'updated by the migration' WHERE id = 2")


def downgrade():
    with op.batch_alter_table("items", recreate="always") as batch:
        batch.drop_column("qty")
'''


def alembic_cli(project, *args, check=True):
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    proc = subprocess.run([sys.executable, "-m", "alembic", *args], cwd=project, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)
    if check:
        assert proc.returncode == 0, describe(proc)
    return proc


def alembic_project(tmp_path, db_path, *, filters=True, enable=True, extra=""):
    project = tmp_path / "project"
    project.mkdir()
    alembic_cli(project, "init", "migrations")
    ini = project / "alembic.ini"
    ini.write_text(ini.read_text().replace("driver://user:pass@localhost/dbname",
                                           f"sqlite:///{db_path}"))
    (project / "models.py").write_text(textwrap.dedent(MODELS).format(extra=extra))
    (project / "migrations" / "env.py").write_text(ENV.format(filters=filters, enable=enable))
    (project / "migrations" / "versions" / "0001_items.py").write_text(FIRST_MIGRATION)
    return project


@pytest.mark.parametrize("filters", [True, False])
def test_autogenerate_against_a_tracked_database_proposes_nothing(tmp_path, db_path, filters):
    project = alembic_project(tmp_path, db_path, filters=filters)
    alembic_cli(project, "upgrade", "head")
    proc = alembic_cli(project, "check", check=False)
    if filters:
        assert proc.returncode == 0, describe(proc)
        assert "No new upgrade operations detected" in proc.stdout
        return
    # Without the filters Alembic wants sqlite-ct's objects gone: the test
    # above would catch a filter that lets any of them through.
    assert proc.returncode != 0
    for name in ("__sysOCSTrackedObjects", "__sysTxCommitSequence", "__sysOCSDeletedRows",
                 "__sysChangeTxBsn", "__sysTrackingContext", "__sysct_chg_items"):
        assert name in proc.stdout + proc.stderr


def test_autogenerate_still_sees_the_users_own_changes(tmp_path, db_path):
    project = alembic_project(tmp_path, db_path,
                              extra="qty: Mapped[int] = mapped_column(Integer, nullable=True)")
    alembic_cli(project, "upgrade", "head")
    proc = alembic_cli(project, "check", check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "add_column" in out and "qty" in out
    assert "__sys" not in out


BATCH_SCRIPT = r"""
import json, sqlite3, sys
import sqlite_ct

PATH, STEP = sys.argv[1], sys.argv[2]
sqlite_ct.register_auto_extension()
conn = sqlite3.connect(PATH, isolation_level=None)
out = {"triggers": sorted(r[0] for r in conn.execute(
    "SELECT name FROM sqlite_schema WHERE type='trigger' AND tbl_name='items'"))}
if STEP == "before":
    conn.execute("INSERT INTO items(id, name) VALUES (1, 'one'), (2, 'two')")
    out["anchor"] = sqlite_ct.enumerate_changes(conn, "items", since=0).new_anchor
elif STEP == "after":
    old_anchor = int(sys.argv[3])
    try:
        sqlite_ct.enumerate_changes(conn, "items", since=old_anchor)
        out["old_anchor"] = "accepted"
    except sqlite_ct.AnchorExpiredError:
        out["old_anchor"] = "expired"
    except sqlite_ct.Error as exc:
        out["old_anchor"] = str(exc)
    out["stamps"] = [list(r) for r in conn.execute(
        "SELECT id, __sysInsertTxBsn, __sysChangeTxBsn FROM items ORDER BY id")]
    out["min_valid"] = conn.execute(
        "SELECT __sysMinValidCsn FROM __sysOCSTrackedObjects WHERE __sysTName = 'items'"
    ).fetchone()[0]
    # A replica reinitialises: the table and the anchor in one snapshot.
    conn.execute("BEGIN")
    out["snapshot"] = [list(r) for r in conn.execute(
        "SELECT id, name, qty FROM items ORDER BY id")]
    anchor = sqlite_ct.last_committed_csn(conn)
    conn.execute("COMMIT")
    # Writes right after the migration are tracked.
    conn.execute("INSERT INTO items(id, name, qty) VALUES (3, 'three', 3)")
    conn.execute("UPDATE items SET qty = 7 WHERE id = 1")
    conn.execute("DELETE FROM items WHERE id = 2")
    changes = sqlite_ct.enumerate_changes(conn, "items", since=anchor)
    out["changes"] = [changes.inserts, changes.updates, changes.deletes]
    out["problems"] = [p.code for p in sqlite_ct.check(conn)]
print(json.dumps(out))
"""


def test_batch_migration_of_a_tracked_table_is_re_armed_in_the_migration(tmp_path, db_path):
    project = alembic_project(tmp_path, db_path)
    (project / "migrations" / "versions" / "0002_qty.py").write_text(BATCH_MIGRATION)
    alembic_cli(project, "upgrade", "0001")
    before = run_python(BATCH_SCRIPT, db_path, "before")
    assert before["triggers"] == ARMED
    alembic_cli(project, "upgrade", "head")
    after = run_python(BATCH_SCRIPT, db_path, "after", str(before["anchor"]))
    assert after["triggers"] == ARMED
    # The rebuild cannot prove that nothing was written untracked: replicas
    # reinitialise instead of missing changes.
    assert after["old_anchor"] == "expired"
    # The migration's own writes came after the re-arm, in its transaction.
    bsn = after["min_valid"]
    assert after["stamps"] == [[1, 2, 2], [2, 2, bsn], [10, bsn, bsn]]
    assert after["min_valid"] > before["anchor"]
    assert after["snapshot"] == [[1, "one", 0], [2, "updated by the migration", 0],
                                 [10, "from the migration", 1]]
    assert after["changes"] == [[{"id": 3, "name": "three", "qty": 3}],
                                [{"id": 1, "name": "one", "qty": 7}], [{"id": 2}]]
    assert after["problems"] == []
    # Back down: the downgrade rebuilds the table again and re-arms it again.
    alembic_cli(project, "downgrade", "0001")
    with sqlite3.connect(db_path) as raw:
        assert trigger_names(raw, "items") == ARMED
        # Alembic's copy of the guard (which names qty) was skipped; the
        # re-arm installed the guard of the table without qty.
        assert [r[0] for r in raw.execute(
            "SELECT name FROM pragma_index_xinfo('__sysct_guard_items') WHERE key")] == [
            "id", "name", "__sysChangeTxBsn", "__sysInsertTxBsn", "__sysTrackingContext"]


def test_batch_migration_without_enable_loses_the_triggers(tmp_path, db_path):
    """What enable() prevents: the same migration, the extension loaded by a
    plain connect listener, leaves the table without triggers (the next
    enumeration reports it)."""
    project = alembic_project(tmp_path, db_path, enable=False)
    (project / "migrations" / "versions" / "0002_qty.py").write_text(BATCH_MIGRATION)
    alembic_cli(project, "upgrade", "head")
    proc, out = run_python_unchecked(BATCH_SCRIPT, db_path, "after", "0")
    assert out is None or out["triggers"] == [], describe(proc)
    with sqlite3.connect(db_path) as raw:
        assert trigger_names(raw, "items") == []


DROP_MIGRATION = '''
"""items dropped{recreated}"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    op.drop_table("items")
    if {recreate}:
        op.create_table("items", sa.Column("id", sa.Integer, primary_key=True),
                        sa.Column("name", sa.String, nullable=False))
        op.execute("INSERT INTO items(id, name) VALUES (5, 'five')")


def downgrade():
    pass
'''


@pytest.mark.parametrize("recreate", [True, False])
def test_a_tracked_table_dropped_by_a_migration(tmp_path, db_path, recreate, sqlite3_conn):
    """op.drop_table() is allowed; a table re-created under the tracked name
    in the same migration is re-armed before the migration writes to it."""
    project = alembic_project(tmp_path, db_path)
    (project / "migrations" / "versions" / "0002_drop.py").write_text(
        DROP_MIGRATION.format(recreated=" and re-created" if recreate else "",
                              recreate=recreate))
    alembic_cli(project, "upgrade", "head")
    if not recreate:
        assert sqlite_ct.tracked_tables(sqlite3_conn) == []
        return
    assert trigger_names(sqlite3_conn, "items") == ARMED
    min_valid = sqlite3_conn.execute(
        "SELECT __sysMinValidCsn FROM __sysOCSTrackedObjects").fetchone()[0]
    # Re-armed before the migration's INSERT: a replica reinitialised at the
    # re-arming transaction receives the row as an insert.
    changes = sqlite_ct.enumerate_changes(sqlite3_conn, "items", since=min_valid)
    assert changes.inserts == [{"id": 5, "name": "five"}]
    assert sqlite_ct.check(sqlite3_conn) == []


def test_importing_sqlite_ct_imports_none_of_the_tools():
    out = run_python("""
        import json, sys
        import sqlite_ct, sqlite_ct.integrations
        print(json.dumps(sorted(m for m in ("sqlalchemy", "alembic", "sqlite_utils",
                                             "datasette", "pandas", "pluggy")
                                if m in sys.modules)))
    """)
    assert out == []


ADD_COLUMN_MIGRATION = '''
"""items.note, which SQLite's ALTER TABLE adds in place"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade():
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("note", sa.Text))


def downgrade():
    pass
'''


def test_a_batch_migration_without_a_rebuild_keeps_the_anchors(tmp_path, db_path):
    project = alembic_project(tmp_path, db_path)
    (project / "migrations" / "versions" / "0002_note.py").write_text(ADD_COLUMN_MIGRATION)
    alembic_cli(project, "upgrade", "0001")
    before = run_python(BATCH_SCRIPT, db_path, "before")
    alembic_cli(project, "upgrade", "head")
    with sqlite3.connect(db_path) as raw:
        assert trigger_names(raw, "items") == ARMED
        assert raw.execute("SELECT __sysMinValidCsn FROM __sysOCSTrackedObjects"
                           ).fetchone()[0] == 0
        assert "note" in [r[1] for r in raw.execute("PRAGMA table_info(items)")]
    sqlite_ct.register_auto_extension()
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("UPDATE items SET note = 'n' WHERE id = 1")
        changes = sqlite_ct.enumerate_changes(conn, "items", since=before["anchor"])
    finally:
        conn.close()
    assert changes.updates == [{"id": 1, "name": "one", "note": "n"}]


@pytest.mark.parametrize("name, type_, ours", [
    ("__sysOCSTrackedObjects", "table", True), ("__sysCtMeta", "table", True),
    ("__sysChangeTxBsn", "column", True), ("__sysTrackingContext", "column", True),
    ("__sysct_chg_items", "index", True),
    ("items", "table", False), ("__system_notes", "column", False),
    ("ix_items_name", "index", False), (None, "schema", False)])
def test_the_filters_name_exactly_sqlite_cts_objects(name, type_, ours):
    from sqlite_ct.integrations import alembic as ct_alembic
    assert ct_alembic.include_name(name, type_, {}) is not ours
    assert ct_alembic.include_object(None, name, type_, True, None) is not ours
