"""PostgreSQL-specific behaviour of the hub: filters in PostgreSQL SQL,
retention by age, anchors from another hub, cascades, added columns."""
import os

import pytest

from pg_fixtures import sqlite_client, user_rows
from sqlite_ct.sync import ClientSyncProvider, SyncAgent, SyncError
from sqlite_ct.sync.pg._anchor import HubKey, PgAnchor


@pytest.fixture
def orders(pg_exec):
    pg_exec("CREATE TABLE orders (id integer PRIMARY KEY, owner text, created timestamptz, "
            "note text)")
    pg_exec("INSERT INTO orders VALUES (1, 'ann', '2026-01-01T10:00Z', '50%'), "
            "(2, 'bob', '2026-02-01T10:00Z', 'x'), (3, 'ann', '2025-01-01T10:00Z', 'old')")


def test_filter_in_postgresql_sql_with_casts_and_percent(orders, pg_provider):
    server = pg_provider(filters={
        "orders": "owner = :user AND created::date >= :since::date AND note NOT LIKE 'z%'"})
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["orders"],
                      parameters={"user": "ann", "since": "2026-01-01"})
    agent.synchronize()
    assert [r[0] for r in user_rows(client, "orders")] == [1]


def test_purge_keeps_recent_tombstones(orders, pg_exec, pg_provider):
    server = pg_provider()
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["orders"])
    agent.synchronize()
    pg_exec("DELETE FROM orders WHERE id = 1")
    assert server.purge_tombstones("orders", older_than_days=1) == 0
    agent.synchronize()
    assert [r[0] for r in user_rows(client, "orders")] == [2, 3]
    pg_exec("UPDATE sqlite_ct.c_orders SET deleted_at = now() - interval '2 days'")
    assert server.purge_tombstones("orders", older_than_days=1) == 1
    assert pg_exec("SELECT min_valid_xid IS NOT NULL FROM sqlite_ct.tracked_tables") == [(True,)]
    pg_exec("INSERT INTO orders VALUES (4, 'cy', now(), 'new')")
    agent.synchronize()
    assert [r[0] for r in user_rows(client, "orders")] == [2, 3, 4]


def test_anchor_of_another_hub_or_not_a_pg_anchor_is_refused(orders, pg_provider, pg_dsn,
                                                            pg_exec):
    server = pg_provider()
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["orders"])
    agent.synchronize()
    pg_exec("UPDATE sqlite_ct.hub_info SET server_id = gen_random_uuid()")
    other = pg_provider()       # the same database restored as another hub
    agent.server = other
    with pytest.raises(SyncError, match='anchor of table "orders" was issued by another '
                                        'server; reinitialise the table'):
        agent.synchronize()
    with pytest.raises(SyncError, match="not issued by a sqlite-ct PostgreSQL hub"):
        PgAnchor.decode(b"sqct\x01" + b"\0" * 40, "orders", HubKey(b"\0" * 16, b"\0" * 16,
                                                                    b"\0" * 32))


def test_cascaded_deletes_and_trigger_writes_on_the_hub_are_tracked(pg_exec, pg_provider):
    pg_exec("CREATE TABLE parent (id integer PRIMARY KEY)")
    pg_exec("CREATE TABLE child (id integer PRIMARY KEY, "
            "parent integer REFERENCES parent ON DELETE CASCADE)")
    pg_exec("INSERT INTO parent VALUES (1), (2)")
    pg_exec("INSERT INTO child VALUES (10, 1), (20, 2)")
    server = pg_provider()
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["parent", "child"])
    agent.synchronize()
    pg_exec("DELETE FROM parent WHERE id = 1")
    agent.synchronize()
    assert user_rows(client, "child") == [(20, 2)]
    assert user_rows(client, "parent") == [(2,)]


def test_a_column_added_on_the_hub_reaches_the_client(orders, pg_exec, pg_provider):
    server = pg_provider()
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["orders"])
    agent.synchronize()
    pg_exec("ALTER TABLE orders ADD COLUMN qty integer")
    pg_exec("UPDATE orders SET qty = 5 WHERE id = 2")
    agent.synchronize()
    assert [r[-1] for r in user_rows(client, "orders")] == [None, 5, None]


def test_a_hub_column_sqlite_cannot_add_is_refused_with_instructions(orders, pg_exec,
                                                                     pg_provider):
    server = pg_provider()
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["orders"])
    agent.synchronize()
    pg_exec("ALTER TABLE orders ADD COLUMN qty integer")
    pg_exec("UPDATE orders SET qty = 1")
    pg_exec("ALTER TABLE orders ALTER COLUMN qty SET NOT NULL")
    with pytest.raises(SyncError) as info:
        agent.synchronize()
    assert str(info.value) == (
        'sqlite-ct sync: the hub\'s table "orders" has a new column "qty" (NOT NULL without '
        "a default) that SQLite cannot add to a table that has rows; add it to the client "
        "table yourself (ALTER TABLE ... ADD COLUMN with a constant default), then "
        "synchronise")
    client.execute("ALTER TABLE orders ADD COLUMN qty INTEGER NOT NULL DEFAULT 0")
    agent.synchronize()
    assert [r[-1] for r in user_rows(client, "orders")] == [1, 1, 1]


def test_a_retyped_hub_column_is_refused_with_instructions(orders, pg_exec, pg_provider):
    server = pg_provider()
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["orders"])
    agent.synchronize()
    pg_exec("ALTER TABLE orders ALTER COLUMN note TYPE integer USING length(note)")
    with pytest.raises(SyncError, match='column "note" of table "orders" is INTEGER on the '
                                        'hub but TEXT on the client'):
        agent.synchronize()


@pytest.mark.parametrize("key_type, keys", [
    ("text, b bytea", [("a", b"\x00"), ("a", b"\xff"), ("b\u00e9", b"")]),
    ("uuid, b timestamptz", [("00000000-0000-0000-0000-000000000001", "2026-01-01 00:00:00+00:00"),
                             ("00000000-0000-0000-0000-000000000001", "2026-01-01 00:00:00.5+00:00"),
                             ("ffffffff-0000-0000-0000-000000000000", "1999-12-31 23:59:59+00:00")]),
    ("numeric, b double precision", [(1, 0.1), (1, 0.30000000000000004), (2.5, -0.0)]),
])
def test_batches_resume_after_composite_keys_of_every_type(pg_exec, pg_provider, key_type, keys):
    pg_exec(f"CREATE TABLE k (a {key_type}, v integer, PRIMARY KEY (a, b))")
    server = pg_provider()
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["k"], batch_size=1)
    agent.synchronize()
    for n, (a, b) in enumerate(keys):
        pg_exec("INSERT INTO k VALUES (%s, %s, %s)", (a, b, n))
    pg_exec("UPDATE k SET v = v + 10")           # one transaction: the cursor's key decides
    stats = agent.synchronize()
    assert stats.download_batches >= len(keys)
    assert sorted(r[2] for r in user_rows(client, "k")) == [10 + n for n in range(len(keys))]
    client.execute("UPDATE k SET v = v + 100")
    agent.synchronize()
    assert sorted(r[0] for r in pg_exec("SELECT v FROM k")) == [110 + n for n in range(len(keys))]


def test_a_hub_restored_from_an_older_backup_is_refused_not_skipped(pg_dsn, pg_exec,
                                                                  pg_provider, tmp_path):
    """pg_dump of the hub restored into another cluster whose transaction ids
    are behind the client's anchor: its next ids would look already received,
    so the client is told to reinitialise."""
    import subprocess
    import pg_cluster
    from sqlite_ct.sync.pg import PostgresServerProvider
    bin_dir = pg_cluster.find_bin_dir()
    if bin_dir is None:
        pytest.skip("needs the server binaries (pg_dump, psql) to restore into a new cluster")
    pg_exec("CREATE TABLE t (id integer PRIMARY KEY, v text)")
    for _ in range(1500):       # the backup's stamps are in the new cluster's future
        pg_exec("SELECT pg_current_xact_id()")
    pg_exec("INSERT INTO t VALUES (1, 'backed up')")
    server = pg_provider()
    server.provision("t")
    dump = tmp_path / "hub.sql"
    subprocess.run([os.path.join(bin_dir, "pg_dump"), "-f", str(dump), pg_dsn], check=True)
    for _ in range(1500):       # the original hub moves on
        pg_exec("SELECT pg_current_xact_id()")
    pg_exec("INSERT INTO t VALUES (2, 'after the backup')")
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["t"])
    agent.synchronize()
    assert len(user_rows(client, "t")) == 2
    with pg_cluster.cluster() as restored:
        subprocess.run([os.path.join(bin_dir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                        "-f", str(dump), restored], check=True, stdout=subprocess.DEVNULL)
        with PostgresServerProvider(restored) as other:
            assert other.server_id == server.server_id
            agent.server = other
            with pytest.raises(SyncError, match='anchor of table "t" was issued by an '
                                                'earlier generation of this hub.*'
                                                'reinitialise the table'):
                agent.synchronize()
            # Reinitialised, the client gets every restored row, although
            # their stamps came from ids the new cluster has not reached.
            client.execute("INSERT INTO t (id, v) VALUES (10, 'unsent')")
            agent.reinitialise()
            assert user_rows(client, "t") == [(1, "backed up"), (10, "unsent")]


@pytest.mark.parametrize("bad", [-1, float("nan"), "1", None])
def test_purge_with_a_bad_age_is_refused(orders, pg_provider, bad):
    server = pg_provider()
    server.provision("orders")
    with pytest.raises(SyncError, match=r"purge_tombstones\(\): older_than_days must be a "
                                        r"number >= 0"):
        server.purge_tombstones("orders", older_than_days=bad)


def test_tables_in_another_schema(pg_exec, pg_provider):
    pg_exec('CREATE SCHEMA "App Data"')
    pg_exec('CREATE TABLE "App Data".notes (id integer PRIMARY KEY, body text)')
    pg_exec('CREATE TABLE public.notes (id integer PRIMARY KEY, other integer)')
    pg_exec("""INSERT INTO "App Data".notes VALUES (1, 'in schema')""")
    server = pg_provider(schema="App Data")
    client = sqlite_client()
    agent = SyncAgent(ClientSyncProvider(client), server, ["notes"])
    agent.synchronize()
    client.execute("INSERT INTO notes (id, body) VALUES (2, 'from client')")
    agent.synchronize()
    assert pg_exec('SELECT * FROM "App Data".notes ORDER BY id') == [
        (1, "in schema"), (2, "from client")]
    assert pg_exec("SELECT count(*) FROM public.notes") == [(0,)]


def test_tables_of_one_name_in_two_schemas_and_long_names_get_their_own_side_tables(
        pg_exec, pg_provider):
    long = "x" * 62
    pg_exec('CREATE SCHEMA other')
    for schema in ("public", "other"):
        pg_exec(f'CREATE TABLE {schema}.notes (id integer PRIMARY KEY, body text)')
        pg_exec(f'CREATE TABLE {schema}."{long}1" (id integer PRIMARY KEY)')
        pg_exec(f'CREATE TABLE {schema}."{long}2" (id integer PRIMARY KEY)')
    for schema in ("public", "other"):
        pg_provider(schema=schema).provision("notes", f"{long}1", f"{long}2")
    sides = pg_exec("SELECT side_table FROM sqlite_ct.tracked_tables")
    assert len(sides) == len(set(sides)) == 6
    assert pg_exec("SELECT count(*) FROM pg_indexes WHERE schemaname = 'sqlite_ct' "
                   "AND indexdef LIKE '%change_xid%'") == [(6,)]
    pg_exec("INSERT INTO public.notes VALUES (1, 'public')")
    pg_exec("INSERT INTO other.notes VALUES (2, 'other')")
    for schema, expected in (("public", [(1, "public")]), ("other", [(2, "other")])):
        client = sqlite_client()
        SyncAgent(ClientSyncProvider(client), pg_provider(schema=schema),
                  ["notes"]).synchronize()
        assert user_rows(client, "notes") == expected
