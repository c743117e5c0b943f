"""A property-based run over the whole OpenAPI surface (schemathesis against a live ``roost serve``):
no 5xx, and no response outside its schema (status code, content type, body, headers).

Real ids (an account, a user, a device) are offered to schemathesis alongside the ones it makes
up, so the fuzzed bodies also reach the code behind a successful lookup, not only the 404s.
The seed is random unless ``ROOST_FUZZ_SEED`` is set; a failure prints it to reproduce the run.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from tests.support.server import SERVICE_TOKEN, ServerProcess

pytestmark = pytest.mark.e2e

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
    "missing_required_header",
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
])
EXAMPLES_PER_OPERATION = 30
TIME_LIMIT_S = 400  # a run takes 10-25 s on a quiet machine, 90 s on a busy one; this only stops a hung one
# One worker: with several, schemathesis 4.32 sometimes fails inside hypothesis's lambda-source
# cache ("AST constructor recursion depth mismatch", a thread-safety bug), which is not ours.
WORKERS = 1


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess.start(database_url, tmp_path)
    try:
        yield process
    finally:
        code = process.terminate()
        assert code == 0, process.log()


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess.start(f"sqlite:///{tmp_path / 'roost.db'}", tmp_path)
    try:
        yield process
    finally:
        process.terminate()


def seed_data(url: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}, timeout=10) as c:
        account = c.post("/api/admin/accounts", json={"name": "Fuzz", "timezone": "UTC"}).json()
        user = c.post("/api/admin/users", json={"account_id": account["id"], "email": "fuzz@example.com",
                                                "display_name": "Fuzz"}).json()
        device = c.post("/api/admin/devices", json={"user_id": user["id"], "name": "fuzzer"}).json()
    return {"account": account["id"], "user": user["id"], "device": device["id"], "token": device["token"]}


def write_config(path: Path, ids: dict[str, Any]) -> Path:
    """Known ids as dictionaries schemathesis draws from half the time, for every place an id goes."""
    lines = []
    for kind in ("account", "user", "device"):
        lines += [f"[dictionaries.{kind}]", f"values = [{json.dumps(ids[kind])}]", ""]
    lines.append("[parameters]")
    for kind in ("account", "user", "device"):
        for where in ("path", "query", "body"):
            lines.append(f'"{where}.{kind}_id" = {{ dictionary = "{kind}", probability = 0.5 }}')
    # A body over ROOST_MAX_BODY_BYTES is refused with 413 before it is parsed: a rejection too.
    lines += ["", "[checks.negative_data_rejection]",
              "expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_schemathesis(url: str, token: str, config: Path, seed: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{url}/openapi.json",
         "--header", f"Authorization: Bearer {token}", "--checks", CHECKS,
         "--max-examples", str(EXAMPLES_PER_OPERATION), "--seed", str(seed), "--workers", str(WORKERS),
         "--request-timeout", "10", "--suppress-health-check", "all", *extra],
        capture_output=True, text=True, timeout=TIME_LIMIT_S, cwd=config.parent,
        env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"},
    )


def explain(result: subprocess.CompletedProcess[str], server: ServerProcess, seed: int) -> str:
    errors = [line for line in server.log().splitlines() if '"level": "error"' in line]
    return (f"schemathesis exited {result.returncode} (seed {seed}; rerun with ROOST_FUZZ_SEED={seed})\n"
            f"{result.stdout[-12000:]}\n{result.stderr[-2000:]}\nserver errors:\n" + "\n".join(errors[:5]))


def generated_cases(output: str) -> int:
    m = re.search(r"(\d+) generated", output)
    return int(m.group(1)) if m else 0


@pytest.mark.timeout(TIME_LIMIT_S + 60)  # its own subprocess limit, plus set-up (62 s measured, 90 s seen busy)
def test_whole_api_with_the_service_token(server: ServerProcess, tmp_path: Path) -> None:
    seed = int(os.environ.get("ROOST_FUZZ_SEED") or random.randrange(2**32))
    ids = seed_data(server.url)
    config = write_config(tmp_path / "schemathesis.toml", ids)

    result = run_schemathesis(server.url, SERVICE_TOKEN, config, seed)

    assert result.returncode == 0, explain(result, server, seed)
    assert generated_cases(result.stdout) > 500, result.stdout[-3000:]
    assert '"unhandled error"' not in server.log()


@pytest.mark.timeout(TIME_LIMIT_S + 60)  # its own subprocess limit, plus set-up (62 s measured, 90 s seen busy)
def test_device_api_with_a_device_token(server: ServerProcess, tmp_path: Path) -> None:
    seed = int(os.environ.get("ROOST_FUZZ_SEED") or random.randrange(2**32))
    ids = seed_data(server.url)
    config = write_config(tmp_path / "schemathesis.toml", ids)

    result = run_schemathesis(server.url, ids["token"], config, seed, "--include-path-regex", "^/api/device/")

    assert result.returncode == 0, explain(result, server, seed)
    assert generated_cases(result.stdout) > 0, result.stdout[-3000:]
    assert '"unhandled error"' not in server.log()


# -- what earlier runs found, pinned ---------------------------------------------------------------


def test_a_body_that_is_not_utf8_is_400_not_500(sqlite_server: ServerProcess) -> None:
    r = httpx.post(f"{sqlite_server.url}/api/admin/accounts", content=b"\x80\x01",
                   headers={"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"})

    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "malformed_json"
    assert "UTF-8" in r.json()["error"]["message"]


def test_the_openapi_document_states_what_the_routes_require_and_answer(sqlite_server: ServerProcess) -> None:
    """Required query parameters and bodies are marked so, 415 is documented, probes need no token."""
    spec = httpx.get(f"{sqlite_server.url}/openapi.json").json()
    paths = spec["paths"]

    users_query = {p["name"]: p for p in paths["/api/admin/users"]["get"]["parameters"]}
    assert users_query["account_id"].get("required") is True
    assert not users_query["limit"].get("required") and not users_query["cursor"].get("required")
    devices_query = {p["name"]: p for p in paths["/api/admin/devices"]["get"]["parameters"]}
    assert devices_query["user_id"].get("required") is True
    with_body = [(path, method) for path, ops in paths.items() for method, op in ops.items() if "requestBody" in op]
    assert ("/api/admin/accounts", "post") in with_body and ("/api/admin/users/{user_id}", "patch") in with_body
    for path, method in with_body:
        operation = paths[path][method]
        assert operation["requestBody"]["required"] is True, (path, method)
        assert "415" in operation["responses"], (path, method)
    assert "415" not in paths["/api/admin/status"]["get"]["responses"]
    assert spec["security"] == [{"bearer": []}]
    assert paths["/healthz"]["get"]["security"] == [] and paths["/readyz"]["get"]["security"] == []
    assert "security" not in paths["/api/admin/status"]["get"]  # the document-wide bearer applies
