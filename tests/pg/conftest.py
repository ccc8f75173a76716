from pg_fixtures import (pg_dsn, pg_exec, pg_provider, pg_server,  # noqa: F401
                         pg_test_database)
