"""The admin API under ``/admin``: API keys and the egress check. Every route needs an admin key.

``require_admin`` is a FastAPI dependency that other routes outside ``/admin`` (such as
``/metrics``) can use to demand an admin key as well.
"""

from enclave.api.admin.dependencies import AdminDep, require_admin

__all__ = ["AdminDep", "require_admin"]
