"""metrics.require_key: /metrics serves only requests that carry an admin API key."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import ServerProcess, running_server

pytestmark = pytest.mark.slow


def create_key(tmp_path: Path, *args: str) -> str:
    """Create a key with `enclave keys create` in the server's data folder; return it."""
    environment = {**os.environ, "ENCLAVE_DATA_DIR": str(tmp_path / "data"),
                   "HOME": str(tmp_path)}
    environment.pop("ENCLAVE_CONFIG", None)
    result = subprocess.run([sys.executable, "-m", "enclave", "keys", "create", *args],
                            capture_output=True, text=True, env=environment, cwd=tmp_path,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[tuple[ServerProcess, str, str]]:
    folder = tmp_path_factory.mktemp("metrics-auth")
    admin_key = create_key(folder, "--user", "prometheus", "--role", "admin")
    user_key = create_key(folder, "--user", "alice")
    with running_server(folder, "--parallel", "1",
                        env={"ENCLAVE_METRICS__REQUIRE_KEY": "true"}) as server:
        yield server, admin_key, user_key


def test_metrics_without_key_rejected(keyed_server: tuple[ServerProcess, str, str]) -> None:
    server, _, _ = keyed_server

    response = server.get("/metrics")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"
    assert "enclave_" not in response.text


def test_metrics_with_user_key_forbidden(keyed_server: tuple[ServerProcess, str, str]) -> None:
    server, _, user_key = keyed_server

    response = server.get("/metrics", headers={"Authorization": f"Bearer {user_key}"})

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "admin_required"


def test_metrics_with_admin_key_served(keyed_server: tuple[ServerProcess, str, str]) -> None:
    server, admin_key, _ = keyed_server

    response = server.get("/metrics", headers={"Authorization": f"Bearer {admin_key}"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "enclave_build_info" in response.text


def test_metrics_scrape_logged_with_principal(
    keyed_server: tuple[ServerProcess, str, str]
) -> None:
    server, admin_key, _ = keyed_server

    server.get("/metrics", headers={"Authorization": f"Bearer {admin_key}",
                                    "X-Request-Id": "scrape-with-key"})

    lines = [line for line in server.log().splitlines()
             if "enclave.access" in line and "request_id=scrape-with-key" in line]
    assert len(lines) == 1, lines
    assert "user_id=prometheus" in lines[0]
    assert admin_key not in server.log()
