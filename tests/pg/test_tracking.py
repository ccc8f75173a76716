"""Change tracking on the PostgreSQL hub: every writer is tracked (psql,
other applications), provisioning is idempotent and leaves the application's
columns alone, TRUNCATE is refused."""
import os
import subprocess
import sys

import pytest

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed "
                                               "(pip install 'sqlite-ct[postgres]')")

from pg_fixtures import sqlite_client, user_rows
from sqlite_ct.sync import ClientSyncProvider, SyncAgent, SyncError
from sqlite_ct.sync.pg import PostgresServerProvider


def rows(conn, table="items"):
    return user_rows(conn, table)


@pytest.fixture
def setup(pg_exec, pg_provider):
    pg_exec("CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, qty integer)")
    pg_exec("INSERT INTO items VALUES (1, 'one', 1), (2, 'two', 2)")
    hub = pg_provider()
    client = sqlite_client()
    return hub, client, SyncAgent(ClientSyncProvider(client), hub, ["items"])


def test_rows_present_before_provisioning_are_downloaded(setup):
    hub, client, agent = setup
    assert agent.synchronize().total_changes_downloaded == 2
    assert rows(client) == [(1, "one", 1), (2, "two", 2)]


def test_direct_sql_inserts_updates_deletes_reach_clients(setup, pg_exec):
    hub, client, agent = setup
    agent.synchronize()
    pg_exec("INSERT INTO items VALUES (3, 'three', 3)")
    pg_exec("UPDATE items SET qty = qty * 10 WHERE id <= 2")
    pg_exec("DELETE FROM items WHERE id = 1")
    pg_exec("INSERT INTO items VALUES (4, 'four', 4) ON CONFLICT (id) DO NOTHING")
    pg_exec("INSERT INTO items VALUES (2, 'TWO', 0) ON CONFLICT (id) DO UPDATE "
            "SET name = excluded.name")
    stats = agent.synchronize()
    assert rows(client) == [(2, "TWO", 20), (3, "three", 3), (4, "four", 4)]
    assert stats.total_changes_downloaded == 4


def test_update_of_the_key_is_a_delete_plus_an_insert(setup, pg_exec):
    hub, client, agent = setup
    agent.synchronize()
    pg_exec("UPDATE items SET id = id + 10")
    agent.synchronize()
    assert rows(client) == [(11, "one", 1), (12, "two", 2)]


def test_writes_inside_a_function_and_a_rolled_back_savepoint(setup, pg_dsn):
    hub, client, agent = setup
    agent.synchronize()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("INSERT INTO items VALUES (5, 'kept', 5)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            with conn.transaction():
                conn.execute("INSERT INTO items VALUES (6, 'undone', 6)")
                conn.execute("INSERT INTO items VALUES (1, 'dup', 1)")
        conn.execute("DO $$ BEGIN UPDATE items SET name = 'via plpgsql' WHERE id = 2; END $$")
    agent.synchronize()
    assert rows(client) == [(1, "one", 1), (2, "via plpgsql", 2), (5, "kept", 5)]


def test_truncate_is_refused_with_what_to_do(setup, pg_exec):
    hub, client, agent = setup
    agent.synchronize()
    with pytest.raises(psycopg.errors.FeatureNotSupported,
                       match="TRUNCATE of table items is not tracked.*DELETE FROM"):
        pg_exec("TRUNCATE items")
    assert len(pg_exec("SELECT * FROM items")) == 2


def test_provisioning_is_idempotent_and_keeps_the_application_columns(setup, pg_exec, pg_dsn):
    hub, client, agent = setup
    before = pg_exec("SELECT column_name, data_type FROM information_schema.columns "
                     "WHERE table_name = 'items' ORDER BY ordinal_position")
    hub.provision("items")
    hub.provision("items")
    other = PostgresServerProvider(pg_dsn)
    other.provision("items")
    other.close()
    assert pg_exec("SELECT column_name, data_type FROM information_schema.columns "
                   "WHERE table_name = 'items' ORDER BY ordinal_position") == before
    assert pg_exec("SELECT count(*) FROM sqlite_ct.tracked_tables") == [(1,)]
    assert pg_exec("SELECT count(*) FROM sqlite_ct.c_items") == [(2,)]
    assert sorted(r[0] for r in pg_exec(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'items'::regclass")) == [
        "sqlite_ct_delete", "sqlite_ct_insert", "sqlite_ct_truncate", "sqlite_ct_update"]


def test_uploads_carry_the_client_id_as_context_other_writes_none(setup, pg_exec):
    hub, client, agent = setup
    agent.synchronize()
    client.execute("INSERT INTO items (id, name, qty) VALUES (7, 'from client', 7)")
    agent.synchronize()
    pg_exec("INSERT INTO items VALUES (8, 'from psql', 8)")
    ctx = dict(pg_exec("SELECT id, context::text FROM sqlite_ct.c_items WHERE id IN (7, 8)"))
    assert ctx == {7: str(ClientSyncProvider(client).client_id), 8: None}


def test_table_without_primary_key_or_unsupported_type_is_refused(pg_exec, pg_provider):
    pg_exec("CREATE TABLE nokey (a integer)")
    pg_exec("CREATE TABLE odd (id integer PRIMARY KEY, span interval)")
    hub = pg_provider()
    with pytest.raises(SyncError, match='table "nokey" has no PRIMARY KEY'):
        hub.provision("nokey")
    with pytest.raises(SyncError, match='column "span" of table "odd" has type interval, '
                                        'which the PostgreSQL hub cannot sync exactly'):
        hub.provision("odd")
    with pytest.raises(SyncError, match='table "missing" does not exist in schema "public"'):
        hub.provision("missing")


def test_identifiers_that_need_quoting(pg_exec, pg_provider):
    pg_exec('CREATE TABLE "Odd ""Name""" ("Key Col" text, "ü" integer, PRIMARY KEY ("Key Col"))')
    pg_exec('INSERT INTO "Odd ""Name""" VALUES (\'a\', 1)')
    hub = pg_provider()
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), hub, ['Odd "Name"'])
    agent.synchronize()
    client.execute('INSERT INTO "Odd ""Name""" ("Key Col", "ü") VALUES (\'b\', 2)')
    pg_exec('UPDATE "Odd ""Name""" SET "ü" = 10 WHERE "Key Col" = \'a\'')
    agent.synchronize()
    assert rows(client, 'Odd "Name"') == [("a", 10), ("b", 2)]
    assert pg_exec('SELECT * FROM "Odd ""Name""" ORDER BY 1') == [("a", 10), ("b", 2)]


def test_provider_from_url_and_server_id_is_stable(pg_dsn, pg_exec):
    pg_exec("CREATE TABLE items (id integer PRIMARY KEY)")
    with PostgresServerProvider.from_url(pg_dsn) as a, PostgresServerProvider(pg_dsn) as b:
        assert a.server_id == b.server_id == a.get_server_info().server_id


def test_writes_in_replica_mode_are_tracked_too(setup, pg_dsn):
    """Logical replication and bulk loads run with session_replication_role =
    replica, which skips ordinary triggers; the tracking triggers fire ALWAYS."""
    hub, client, agent = setup
    agent.synchronize()
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("INSERT INTO items VALUES (9, 'replicated', 9)")
        conn.execute("DELETE FROM items WHERE id = 1")
    agent.synchronize()
    assert rows(client) == [(2, "two", 2), (9, "replicated", 9)]


def test_disabled_or_missing_tracking_triggers_are_refused(setup, pg_exec):
    hub, client, agent = setup
    agent.synchronize()
    pg_exec("ALTER TABLE items DISABLE TRIGGER sqlite_ct_update")
    with pytest.raises(SyncError, match=r'tracking triggers of table "items" are not all '
                                        r'enabled \(sqlite_ct_update disabled\)'):
        agent.synchronize()
    pg_exec("ALTER TABLE items ENABLE ALWAYS TRIGGER sqlite_ct_update")
    agent.synchronize()
    pg_exec("DROP TABLE items")
    pg_exec("CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, qty integer)")
    with pytest.raises(SyncError, match=r"sqlite_ct_delete missing.*if the table was "
                                        r'recreated, call PostgresServerProvider.deprovision'
                                        r'\("items"\)'):
        agent.synchronize()
    pg_exec("INSERT INTO items VALUES (5, 'new', 5)")
    hub.deprovision("items")
    assert pg_exec("SELECT count(*) FROM sqlite_ct.tracked_tables") == [(0,)]
    assert pg_exec("SELECT to_regclass('sqlite_ct.c_items')") == [(None,)]
    with pytest.raises(SyncError, match='table "items" is not provisioned on the hub'):
        hub.deprovision("items")
    fresh = sqlite_client()
    SyncAgent(ClientSyncProvider(fresh), hub, ["items"]).synchronize()
    assert rows(fresh) == [(5, "new", 5)]


def test_deprovision_leaves_the_table_and_stops_tracking(setup, pg_exec):
    hub, client, agent = setup
    agent.synchronize()
    hub.deprovision("items")
    assert pg_exec("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'items'::regclass "
                   "AND NOT tgisinternal") == [(0,)]
    assert pg_exec("SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = "
                   "p.pronamespace WHERE n.nspname = 'sqlite_ct'") == [(0,)]
    pg_exec("TRUNCATE items")
    with pytest.raises(SyncError, match='table "items" is not provisioned on the hub'):
        agent.synchronize()


def test_without_psycopg_the_provider_says_what_to_install():
    code = ("import sys; sys.modules['psycopg'] = None; sys.modules['psycopg_pool'] = None\n"
            "import sqlite_ct.sync\n"
            "from sqlite_ct.sync.pg import PostgresServerProvider\n"
            "try:\n    PostgresServerProvider('postgresql://nowhere/db')\n"
            "except sqlite_ct.sync.SyncError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.stdout.strip() == ("sqlite-ct sync: the PostgreSQL hub needs psycopg 3 and "
                                  "psycopg-pool; pip install 'sqlite-ct[postgres]'"), out.stderr


def test_the_writers_search_path_cannot_change_what_the_triggers_call(setup, pg_dsn,
                                                                      pg_exec):
    hub, client, agent = setup
    agent.synchronize()
    pg_exec("CREATE SCHEMA evil")
    pg_exec("CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql "
            "AS $$ SELECT timestamptz '2000-01-01' $$")
    with psycopg.connect(pg_dsn) as conn:
        conn.execute("SET search_path = evil, pg_catalog, public")
        assert conn.execute("SELECT now()").fetchone()[0].year == 2000
        conn.execute("DELETE FROM items WHERE id = 1")
    assert pg_exec("SELECT extract(year FROM deleted_at) > 2000 FROM sqlite_ct.c_items "
                   "WHERE id = 1") == [(True,)]
