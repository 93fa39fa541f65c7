"""Alembic environment: tidian runs migrations in-process on the store's own connection."""

from alembic import context

from tidian.store.schema import VERSION_TABLE, Base

connection = context.config.attributes["connection"]
context.configure(
    version_table=VERSION_TABLE,
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
