from pg_fixtures import pg_dsn, pg_server  # noqa: F401
