"""Exactly-once uploads on the PostgreSQL hub when several processes serve
it: the same upload sent to two providers at once (two service processes
after a lost answer) is applied once; and time_limit() stops hub work with
PostgreSQL's own means."""
import threading
import time
import uuid

import pytest

from sqlite_ct.sync import TableChanges, Upload
from sqlite_ct.sync.pg import HubBusyError, HubTimeoutError


@pytest.fixture
def audited(pg_exec):
    pg_exec("CREATE TABLE notes (id integer PRIMARY KEY, owner text, body text)")
    pg_exec("CREATE TABLE audit (id integer)")
    pg_exec("CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NEW; END$$")
    pg_exec("CREATE TRIGGER audit AFTER INSERT OR UPDATE ON notes FOR EACH ROW "
            "EXECUTE FUNCTION audit_row()")
    return pg_exec


def test_the_same_upload_sent_to_two_providers_at_once_is_applied_once(audited, pg_provider):
    providers = [pg_provider(), pg_provider()]
    for p in providers:
        p.provision("notes")
        p.prepare_service()          # the receipts table exists before
    rows = [(i, "a", f"row {i}") for i in range(1, 2001)]
    upload = Upload(uuid.uuid4(), "g", [TableChanges("notes", ("id", "owner", "body"), ("id",),
                                                     inserts=rows)],
                    {"notes": None}, {}, b"session", 0)
    # The first upload's transaction stays open for a second after it wrote
    # the rows: the second arrives while it is still uncommitted.
    audited("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM pg_sleep(1); RETURN NULL; END$$")
    audited("CREATE TRIGGER slow AFTER INSERT ON notes FOR EACH STATEMENT "
            "EXECUTE FUNCTION slow()")
    results = [None, None]

    def send(i):
        results[i] = providers[i].apply_changes(upload)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.4)
    for t in threads:
        t.join(120)
    assert [(r.applied, r.failed) for r in results] == [(2000, 0), (2000, 0)]
    assert audited("SELECT count(*), count(DISTINCT id) FROM audit") == [(2000, 2000)]
    assert audited("SELECT count(*) FROM sqlite_ct.upload_receipts") == [(1,)]


def test_time_limit_stops_a_call_waiting_on_a_lock(audited, pg_provider, pg_dsn):
    import psycopg
    provider = pg_provider(lock_timeout_ms=60_000)
    provider.provision("notes")
    upload = Upload(uuid.uuid4(), "g", [TableChanges("notes", ("id", "owner", "body"), ("id",),
                                                     inserts=[(1, "a", "x")])], {"notes": None})
    with psycopg.connect(pg_dsn) as locker:
        locker.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with provider.time_limit(1.0):
            with pytest.raises(HubTimeoutError, match="took longer than 1 s"):
                provider.apply_changes(upload)
        assert time.monotonic() - started < 5
        locker.rollback()
    assert provider.apply_changes(upload).applied == 1          # no limit outside the block
    assert audited("SELECT count(*) FROM notes") == [(1,)]


def test_lock_timeout_answers_busy(audited, pg_provider, pg_dsn):
    import psycopg
    provider = pg_provider(lock_timeout_ms=200)
    provider.provision("notes")
    upload = Upload(uuid.uuid4(), "g", [TableChanges("notes", ("id", "owner", "body"), ("id",),
                                                     inserts=[(1, "a", "x")])], {"notes": None})
    with psycopg.connect(pg_dsn) as locker:
        locker.execute("LOCK TABLE notes IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(HubBusyError, match="locked by another transaction for more than "
                                               "200 ms"):
            provider.apply_changes(upload)
        locker.rollback()
    assert audited("SELECT count(*) FROM notes") == [(0,)]


def test_time_limit_bounds_the_wait_for_a_pooled_connection(audited, pg_provider):
    provider = pg_provider()
    provider.provision("notes")
    with provider.pool.connection(), provider.pool.connection():   # the whole pool
        started = time.monotonic()
        with provider.time_limit(0.5):
            with pytest.raises(HubTimeoutError):
                provider.provision("notes")
        assert time.monotonic() - started < 5


def test_time_limit_cancels_a_call_whose_statements_are_each_short(pg_exec, pg_provider):
    """Four statements of 0.4 s each in one upload: none reaches the
    statement_timeout of 1 s, the call as a whole does; the cancel at the
    deadline stops it and nothing is applied."""
    pg_exec("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM pg_sleep(0.4); RETURN NULL; END$$")
    tables = [f"s{i}" for i in range(4)]
    for t in tables:
        pg_exec(f"CREATE TABLE {t} (id integer PRIMARY KEY)")
        pg_exec(f"CREATE TRIGGER slow AFTER INSERT ON {t} FOR EACH STATEMENT "
                f"EXECUTE FUNCTION slow()")
    provider = pg_provider()
    provider.provision(*tables)
    upload = Upload(uuid.uuid4(), "g", [TableChanges(t, ("id",), ("id",), inserts=[(1,)])
                                        for t in tables], {t: None for t in tables})
    started = time.monotonic()
    with provider.time_limit(1.0):
        with pytest.raises(HubTimeoutError):
            provider.apply_changes(upload)
    assert 0.9 < time.monotonic() - started < 4
    assert [pg_exec(f"SELECT count(*) FROM {t}")[0][0] for t in tables] == [0, 0, 0, 0]
    assert provider.apply_changes(upload).applied == 4
