"""The run ledger: SQL tables (SQLite by default, PostgreSQL by URL) and weights on disk."""

from tidian.store.store import DEFAULT_URL, Store, StoreError, default_url

__all__ = ["DEFAULT_URL", "Store", "StoreError", "default_url"]
