"""The run ledger: SQL tables (SQLite by default, PostgreSQL by URL) and weights on disk."""

from tidian.store.store import DEFAULT_URL, STALE_AFTER, Store, StoreError, default_url, stale

__all__ = ["DEFAULT_URL", "STALE_AFTER", "Store", "StoreError", "default_url", "stale"]
