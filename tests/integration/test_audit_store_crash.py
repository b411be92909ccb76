"""A writer killed with SIGKILL while appending loses no acknowledged record."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from enclave.audit import AuditSettings, AuditTrail, Principal, RequestOpened
from enclave.audit.signing import load_signing_key, trusted_keys
from enclave.audit.sqlite_store import SQLiteStore
from enclave.audit.store import StoreOptions
from enclave.audit.verify import verify_chain

ACKS_BEFORE_KILL = 2000

# Four threads append open records as fast as the trail acknowledges them and print
# "<seq> <request id>" for each acknowledgement, so commits are in flight at the kill.
WRITER = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from enclave.audit import AuditSettings, AuditTrail, Principal, RequestOpened

    trail = AuditTrail(AuditSettings(checkpoint_interval=50), Path(sys.argv[1]))
    lock = threading.Lock()

    def append(worker):
        for index in range(1_000_000):
            request_id = f"w{worker}-{index}"
            result = trail.open_request(RequestOpened(
                request_id, Principal("alice"), "/v1/chat/completions", "smollm2", "q"))
            with lock:
                print(result.seq, request_id, flush=True)

    for worker in range(4):
        threading.Thread(target=append, args=(worker,)).start()
""")


def test_sigkill_keeps_acknowledged_records(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ENCLAVE_")}
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    acknowledged: dict[int, str] = {}
    try:
        assert process.stdout is not None
        for line in process.stdout:
            seq, request_id = line.split()
            acknowledged[int(seq)] = request_id
            if len(acknowledged) >= ACKS_BEFORE_KILL:
                break
    finally:
        process.send_signal(signal.SIGKILL)
        _, stderr = process.communicate(timeout=30)
    assert len(acknowledged) >= ACKS_BEFORE_KILL, stderr

    with sqlite3.connect(tmp_path / "audit" / "audit.db") as connection:
        stored = dict(connection.execute("SELECT seq, request_id FROM audit_records"))
    missing = {seq: rid for seq, rid in acknowledged.items() if stored.get(seq) != rid}
    assert missing == {}

    # The reopened trail continues the same chain, which verifies from the genesis.
    with AuditTrail(AuditSettings(), tmp_path) as trail:
        after = trail.open_request(RequestOpened("after-crash", Principal("alice"),
                                                 "/v1/chat/completions", "smollm2", "q"))
    assert after.seq == max(stored) + 1
    store = SQLiteStore(tmp_path / "audit" / "audit.db", StoreOptions())
    key = load_signing_key(tmp_path / "audit" / "signing-key.pem").public_key()
    with store.snapshot():
        report = verify_chain(store, trusted_keys([key]))
    store.close()
    assert report.ok, report.breaks
    assert report.records_checked == len(stored) + 1
