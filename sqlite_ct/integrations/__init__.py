"""sqlite-ct in the tools people already use; docs/orm.md is the guide.

One module per tool, each imported on its own so that `import sqlite_ct`
never imports any of these libraries:

    sqlite_ct.integrations.sqlalchemy    enable(engine): the extension on every
                                         pooled connection, a rebuilt table
                                         re-armed, a tracked table not dropped
    sqlite_ct.integrations.alembic       include_name / include_object filters
                                         for autogenerate
    sqlite_ct.integrations.sqlite_utils  sqlite-utils plugin (prepare_connection)
    sqlite_ct.integrations.datasette     Datasette plugin (prepare_connection)
    sqlite_ct.integrations.pandas        to_sql() whose "replace" keeps tracking

The two plugins are registered through the package's entry points (groups
`sqlite_utils` and `datasette`), so installing sqlite-ct makes them active.
"""
