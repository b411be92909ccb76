"""Restoring placeholders in a response that arrives a few characters at a time.

A placeholder such as ``[ID_CARD_1]`` may be split over several deltas (``[ID``, ``_CARD_``,
``1]``). StreamRestorer holds back any tail that could still grow into a known placeholder
and releases it once it is complete or cannot be one, so the concatenated output always
equals ``restore(whole_response, placeholders)`` and no part of a placeholder ever reaches the
caller.
"""

from __future__ import annotations

from collections.abc import Mapping

from enclave.policy.redactor import restore


class StreamRestorer:
    """Restorer of placeholders in one streamed response."""

    def __init__(self, placeholders: Mapping[str, str]) -> None:
        self._placeholders = dict(placeholders)
        self._longest = max((len(key) for key in self._placeholders), default=0)
        self._pending = ""

    def push(self, delta: str) -> str:
        """Add the next delta of the response and return the text that is safe to release."""
        if not self._placeholders:
            return delta

        text = self._pending + delta
        held_from = self._partial_placeholder_start(text)
        self._pending = text[held_from:]
        return restore(text[:held_from], self._placeholders)

    def finish(self) -> str:
        """Return the restored text still held back, at the end of the response."""
        text, self._pending = self._pending, ""
        return restore(text, self._placeholders)

    def _partial_placeholder_start(self, text: str) -> int:
        """Return where an unfinished placeholder starts in ``text``, or ``len(text)``.

        Only a tail shorter than the longest placeholder can still be growing into one, and
        a placeholder contains "[" only as its first character, so releasing everything
        before the earliest such tail never cuts a placeholder in two.
        """
        window_start = max(0, len(text) - self._longest + 1)
        position = text.find("[", window_start)
        while position != -1:
            tail = text[position:]
            if any(key.startswith(tail) and key != tail for key in self._placeholders):
                return position
            position = text.find("[", position + 1)
        return len(text)
