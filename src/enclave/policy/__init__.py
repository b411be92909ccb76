"""Privacy policy: detection and redaction of personal data in prompts, responses and logs.

Modules, from the bottom up:

* ``checksums``: check characters and validity rules (resident ID, bank card, credit code).
* ``detectors``: one pattern and validator per kind of personal data (``Kind``), and
  detectors for configured custom terms and regular expressions.
* ``redactor``: ``Redactor.scan`` -> ``Finding`` list, ``Redactor.redact`` -> ``Redaction``
  with ``[KIND_N]`` placeholders, ``redact_messages`` for chats, and ``restore``.
* ``streaming``: ``StreamRestorer`` restores placeholders in a response streamed delta by
  delta without ever releasing part of one.
* ``settings``: the ``[privacy]`` section (``PrivacySettings``, ``PrivacyMode``).
* ``guard``: ``PrivacyGuard`` applies the mode to a request and says what the model, the
  audit trail and the caller each get.

Built-in kinds: ID_CARD (mainland resident ID, 18 characters), PHONE (mainland mobile),
BANK_CARD, USCC (unified social credit code), EMAIL, IP_ADDRESS (v4 and v6) and PASSPORT
(PRC ordinary passports, reported only near a context word by default). Legacy 15-digit
resident IDs are not detected: they carry no check digit, so any 15-digit number with a
plausible region and date would match, and those cards have been invalid since 2013.
docs/privacy.md lists every rule and the measured precision and recall.

Nothing here imports a web framework or logs the text it scans.
"""

from enclave.policy.detectors import Kind
from enclave.policy.guard import PrivacyGuard, ProtectedRequest
from enclave.policy.redactor import (
    Finding,
    MessagesRedaction,
    PlaceholderMap,
    Redaction,
    Redactor,
    restore,
)
from enclave.policy.settings import PrivacyMode, PrivacySettings
from enclave.policy.streaming import StreamRestorer

__all__ = [
    "Finding",
    "Kind",
    "MessagesRedaction",
    "PlaceholderMap",
    "PrivacyGuard",
    "PrivacyMode",
    "PrivacySettings",
    "ProtectedRequest",
    "Redaction",
    "Redactor",
    "StreamRestorer",
    "restore",
]
