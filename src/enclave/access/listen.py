"""The start-up rule: a server that listens beyond loopback must require API keys."""

from __future__ import annotations

import time

from enclave.access.store import open_key_store
from enclave.config import Settings
from enclave.errors import ConfigError
from enclave.i18n import _


def check_listen_address(settings: Settings) -> None:
    """Raise ConfigError if the server would listen beyond loopback without keys.

    Called before the listening socket is bound, so a refused server never accepts a
    connection. Beyond loopback, ``access.require_keys = "never"`` is rejected, and so is a
    key store without any active key, because no client could use the server.
    """
    server = settings.server
    if server.is_loopback():
        return
    if settings.access.require_keys == "never":
        raise ConfigError(_(
            "Refusing to listen on {host}: access.require_keys is 'never', but a server "
            "reachable from the network must require API keys. Set access.require_keys to "
            "'auto' or 'always', or listen on 127.0.0.1.", host=server.host))

    store = open_key_store(settings.access, settings.data_dir)
    try:
        now = time.time()
        active = sum(1 for record in store.records() if record.status(now) == "active")
    finally:
        store.close()
    if active == 0:
        raise ConfigError(_(
            "Refusing to listen on {host}: a server reachable from the network requires API "
            "keys, and the key store ({store}) has no active key. Create one with "
            "`enclave keys create --user NAME`, or listen on 127.0.0.1.",
            host=server.host, store=store.description))
