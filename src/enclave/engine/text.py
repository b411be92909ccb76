"""Turn generated token bytes into text deltas that are safe to send.

Two guarantees hold for every delta this module returns:

* It contains only whole UTF-8 characters. A token can end in the middle of a multi-byte
  character (byte-fallback tokens for Chinese or emoji do), so incomplete bytes wait for the
  next token instead of being sent or replaced by U+FFFD.
* It contains no stop string, not even the start of one. Text that could be the beginning of
  a stop string is held back until the next token shows whether it is.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class TextChunk:
    """Text released by one step, and whether a stop string ended the generation."""

    text: str
    stopped: bool = False


class StopMatcher:
    """Find stop strings in a stream of text, holding back possible partial matches."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = tuple(s for s in stop if s)
        self._longest = max((len(s) for s in self._stop), default=0)
        self._pending = ""

    def push(self, text: str) -> TextChunk:
        """Add text; return what may be released now."""
        if not self._stop:
            return TextChunk(text)

        buffer = self._pending + text
        match_at = self._first_match(buffer)
        if match_at is not None:
            self._pending = ""
            return TextChunk(buffer[:match_at], stopped=True)

        hold = self._partial_suffix_length(buffer)
        self._pending = buffer[len(buffer) - hold :] if hold else ""
        return TextChunk(buffer[: len(buffer) - hold])

    def flush(self) -> str:
        """Release held-back text at the end of generation (no stop string followed)."""
        text, self._pending = self._pending, ""
        return text

    def _first_match(self, buffer: str) -> int | None:
        positions = [index for s in self._stop if (index := buffer.find(s)) >= 0]
        return min(positions) if positions else None

    def _partial_suffix_length(self, buffer: str) -> int:
        # The longest suffix of buffer that is a proper prefix of some stop string.
        for length in range(min(len(buffer), self._longest - 1), 0, -1):
            suffix = buffer[-length:]
            if any(s.startswith(suffix) for s in self._stop):
                return length
        return 0


class TextAssembler:
    """Decode token bytes incrementally and apply stop strings."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        # "replace" only affects bytes that can never become valid UTF-8; incomplete
        # sequences stay buffered inside the decoder until the next token completes them.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = StopMatcher(stop)

    def push(self, piece: bytes) -> TextChunk:
        """Add the bytes of one token; return the text that may be sent now."""
        return self._stops.push(self._decoder.decode(piece))

    def finish(self) -> str:
        """Return the held-back text once generation has ended without a stop string.

        Bytes of a character that generation cut in half are dropped, not replaced.
        """
        return self._stops.flush()
