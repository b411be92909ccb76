"""The access layer's request observer: model scope before generation, tokens after it."""

from __future__ import annotations

import asyncio
import logging

from enclave.access.control import AccessControl
from enclave.access.keys import Principal
from enclave.access.middleware import model_denied
from enclave.api.lifecycle import RequestRecord

logger = logging.getLogger(__name__)


class AccessObserver:
    """Rejects a model outside the key's scope (403) and charges tokens to the key."""

    def __init__(self, access: AccessControl) -> None:
        self.access = access
        # Charges in flight; held so the event loop does not drop them before they finish.
        self._charges: set[asyncio.Task[None]] = set()

    def request_accepted(self, record: RequestRecord) -> None:
        # Routes accept before they look up or load the model, so a model outside the scope
        # is rejected before it can be loaded.
        principal = record.principal
        if isinstance(principal, Principal) and record.model is not None \
                and not principal.may_use(record.model):
            raise model_denied(record.model)

    def request_finished(self, record: RequestRecord) -> None:
        principal = record.principal
        tokens = record.prompt_tokens + record.completion_tokens
        if not isinstance(principal, Principal) or principal.tokens_per_minute is None \
                or tokens <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            logger.error("Cannot charge %d tokens to key %s: no event loop", tokens,
                         principal.key_prefix)
            return
        # The store may be remote; the charge runs after the response instead of delaying it.
        task = loop.create_task(self.access.charge_tokens(principal, tokens))
        self._charges.add(task)
        task.add_done_callback(self._charges.discard)

    async def drain(self) -> None:
        """Wait for the token charges still in flight (at shutdown)."""
        if self._charges:
            await asyncio.gather(*self._charges, return_exceptions=True)
