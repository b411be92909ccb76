"""API keys, principals and rate limits.

A request's key becomes a ``Principal`` in ``AccessMiddleware`` (``middleware.py``), which
rejects missing, invalid, revoked and expired keys (401) and keys over their request or
token limit (429). ``AccessObserver`` rejects a model outside the key's scope (403) and
charges the tokens of each finished request. Keys live in a ``KeyStore`` (SQLite or
PostgreSQL) and are managed through ``manage.py`` by ``enclave keys`` and ``/admin/keys``.
"""
