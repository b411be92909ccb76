"""Test harness: run the real ``enclave serve`` as a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

DEFAULT_MODEL = "SmolLM2-135M-Instruct.Q4_1"
START_TIMEOUT_S = 90.0


def free_port() -> int:
    """Return a TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A running ``enclave serve``; the log goes to a file for failure messages."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path
        self.base_url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=60, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.base_url + path, timeout=120, **kwargs)

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"enclave serve exited with {self.process.returncode}:\n"
                                   f"{self.log()[-4000:]}")
            try:
                if httpx.get(self.base_url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet; poll again until the deadline
            time.sleep(0.2)
        raise TimeoutError(f"enclave serve not ready after {timeout_s} s:\n{self.log()[-4000:]}")

    def wait_idle(self, timeout_s: float = 30.0) -> None:
        """Wait until no request is decoding or queued, so answers can be compared."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            models = self.get("/ready").json().get("models", {})
            if all(m["slots_active"] == 0 and m["queue_depth"] == 0 for m in models.values()):
                return
            time.sleep(0.05)
        raise TimeoutError(f"server still busy after {timeout_s} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@contextmanager
def running_server(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
) -> Iterator[ServerProcess]:
    """Start ``enclave serve`` with its data under tmp_path; stop it afterwards."""
    port = free_port()
    data_dir = tmp_path / "data"
    log_path = tmp_path / f"server-{port}.log"
    environment = {
        **os.environ,
        "ENCLAVE_DATA_DIR": str(data_dir),
        "ENCLAVE_SERVER__LOG_LEVEL": "debug",
        "HOME": str(tmp_path),
        **(env or {}),
    }
    environment.pop("ENCLAVE_CONFIG", None)
    command = [sys.executable, "-m", "enclave", "serve", "--port", str(port), *args]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=environment, cwd=tmp_path)
    server = ServerProcess(process, port, log_path)
    try:
        if wait:
            server.wait_ready()
        yield server
    finally:
        server.stop()
