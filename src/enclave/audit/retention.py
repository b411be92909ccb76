"""Retention: remove whole segments of the chain older than the retention period.

A purge cuts the chain at a signed checkpoint whose time is older than the retention: every
record up to that checkpoint was written before it, so all of them have expired. The
checkpoint is kept as the anchor from which verification continues, so the records that
remain still verify. Records after the cut stay until a later checkpoint expires too, which
keeps them at most ``checkpoint_max_age_s`` longer than the retention.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enclave.audit.errors import AuditError
from enclave.audit.signing import Checkpoint, SignatureCheck, check_signature
from enclave.audit.store import AuditStore
from enclave.audit.verify import verify_chain


def retention_cutoff_us(months: int, now_us: int) -> int:
    """Return the time ``months`` calendar months before ``now_us`` (the day is clamped to
    the length of the target month, so 31 March minus one month is 28 or 29 February)."""
    seconds, micros = divmod(now_us, 1_000_000)
    moment = time.gmtime(seconds)
    month_index = moment.tm_year * 12 + (moment.tm_mon - 1) - months
    year, month = divmod(month_index, 12)
    day = min(moment.tm_mday, calendar.monthrange(year, month + 1)[1])
    cutoff = calendar.timegm((year, month + 1, day, moment.tm_hour, moment.tm_min,
                              moment.tm_sec, 0, 0, 0))
    return cutoff * 1_000_000 + micros


@dataclass(frozen=True, slots=True)
class PurgePlan:
    """Plan of a purge, which removes every record up to ``cut.seq``."""

    cut: Checkpoint
    cutoff_us: int
    records: int


def plan_purge(
    store: AuditStore, keys: dict[str, Ed25519PublicKey], months: int, now_us: int
) -> PurgePlan | None:
    """Find the newest validly signed checkpoint older than the retention; None if there is
    nothing to purge."""
    cutoff_us = retention_cutoff_us(months, now_us)
    anchor = store.anchor()
    after = anchor.checkpoint.seq if anchor else 0
    candidates = [cp for cp in store.checkpoints() if after < cp.seq and cp.time_us <= cutoff_us]
    for checkpoint in reversed(candidates):
        if check_signature(checkpoint, keys) is not SignatureCheck.VALID:
            continue
        row = store.row(checkpoint.seq)
        if row is None or row.hash != checkpoint.hash:
            raise AuditError(
                f"The checkpoint at seq {checkpoint.seq} does not match the stored chain, so "
                "the purge was stopped. Run `enclave audit verify` and investigate first."
            )
        return PurgePlan(checkpoint, cutoff_us, store.count(up_to_seq=checkpoint.seq))
    return None


def purge_expired(store: AuditStore, keys: dict[str, Ed25519PublicKey], plan: PurgePlan) -> int:
    """Verify the chain, then delete the records of the plan; return how many were deleted.

    Raises AuditError when the chain up to the cut has a break, because deleting those
    records would destroy the evidence of the tampering.
    """
    with store.snapshot():
        report = verify_chain(store, keys)
    early = [item for item in report.breaks if item.first_seq <= plan.cut.seq]
    if early:
        first = early[0]
        raise AuditError(
            f"The chain has a break before the purge cut at seq {plan.cut.seq} ({first.kind} "
            f"at {first.span()}), so nothing was purged. Run `enclave audit verify` and "
            "investigate first."
        )
    return store.purge(plan.cut)
