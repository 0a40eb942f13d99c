"""The SQLite store: opening, migrations, and the queries each part needs."""

from .db import Store, StoreError, open_store

__all__ = ["Store", "StoreError", "open_store"]
