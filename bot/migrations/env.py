"""Alembic's environment: runs the migrations on the connection `bot.db` hands over.

`bot.db.upgrade_schema` passes an open connection, inside its transaction, in
`config.attributes["connection"]`, so the caller's engine settings (a PostgreSQL
search_path, SQLite's pragmas) apply. Without one, as when a developer runs `alembic -c
bot/migrations/alembic.ini ...`, the URL comes from `sqlalchemy.url` or DATABASE_URL.
"""

from __future__ import annotations

from typing import Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection

from bot import db, models  # noqa: F401  (models registers the tables on Base.metadata)

config = context.config


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from bot.config import Settings

    return Settings.load().database_url


def _render_item(kind: str, obj: object, _context: AutogenContext) -> str | Literal[False]:
    # A migration must not depend on the application's code, which changes after it.
    if kind == "type" and isinstance(obj, db.UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run(connection: Connection | None) -> None:
    context.configure(
        connection=connection,
        url=None if connection is not None else _url(),
        literal_binds=connection is None,
        target_metadata=db.Base.metadata,
        compare_type=True,
        render_item=_render_item,
        # SQLite changes a table only by copying it. Batch mode writes migrations that do
        # that on SQLite and plain ALTERs elsewhere, whichever database they were made from.
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _run(None)
elif (given := config.attributes.get("connection")) is not None:
    _run(given)
else:
    engine = db.make_engine(_url())
    try:
        with db.migration_connection(engine) as connection:
            _run(connection)
    finally:
        engine.dispose()
