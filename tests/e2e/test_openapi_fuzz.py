"""A property-based run over the whole OpenAPI surface (schemathesis against a live ``roost serve``)
with every check (``--checks all``): no 5xx, no response outside its schema (status code, content
type, body, headers), no request outside the schema taken, no request inside it refused (but for
``REFUSED_BY_MEANING``), auth not ignored, the Allow header of a 405, and the stateful checks.
The device API runs with a device token, everything else with the service token.

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
CHECKS = "all"
EXAMPLES_PER_OPERATION = 6  # with --checks all over ~70 operations: ~30 s a backend (the 10-minute suite)
TIME_LIMIT_S = 400  # a run takes 50-90 s (a third of it the coverage phase); this only stops a hung one
# One worker: with several, schemathesis 4.32 sometimes fails inside hypothesis's lambda-source
# cache ("AST constructor recursion depth mismatch", a thread-safety bug), which is not ours.
WORKERS = 1

# Operations whose schema-valid requests the server may refuse with 400 for what no JSON Schema a
# client generator takes can say: a reference to a row that must exist and belong to the same
# account (``missing_reference``, "not a device of account"), a deactivated user, a plugin's own
# config rules (checked by the plugin), text with NUL deep inside free JSON (only a recursive schema
# could say it), two fields that must differ (quiet hours' start and end), an opaque cursor (base64
# of JSON) that this endpoint did not hand out, a destination URL's address rules. Each says which.
# Every other operation must take every schema-valid request.
REFUSED_BY_MEANING = {
    "POST /api/admin/scouts": "the connector's and classifier's configs are checked by the plugin",
    "PATCH /api/admin/scouts/{scout_id}": "the connector's and classifier's configs are checked by the plugin",
    "POST /api/v1/handoffs": "created_by must be an active user of the account; no NUL deep in the snapshot",
    "POST /api/v1/handoffs/{handoff_id}/claim": "user_id must be an active user of the handoff's account",
    "POST /api/v1/handoffs/{handoff_id}/cancel": "user_id must be an active user of the handoff's account",
    "POST /api/v1/notifications": "the recipient and actor must be users; no NUL deep in the payload",
    "POST /api/v1/topics/{topic}/events": "the actor must be a user; no NUL deep in the payload",
    "POST /api/v1/watches": "user_id must be a user",
    "POST /api/v1/outreach/batches": "created_by and each item's device_id must belong to the account",
    "PUT /api/admin/accounts/{account_id}/outreach-settings": "quiet hours' start and end must differ",
    "POST /api/v1/outreach/messages": "exactly one of device_id and user_id, of the account",
    "GET /api/v1/usage": "the cursor is base64 of JSON, opaque to a schema",
    "GET /api/v1/tools": "the cursor is base64 of JSON, opaque to a schema",
    "GET /api/v1/users/{user_id}/watches": "the cursor is base64 of the last topic, opaque to a schema",
    "POST /api/v1/webhooks": "the url must name a public http(s) host (the address rules)",
    "PATCH /api/v1/webhooks/{endpoint_id}": "the url must name a public http(s) host (the address rules)",
}

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
    """The run's settings: the service token, the device token for the device API, known ids as
    dictionaries schemathesis draws from (so bodies also reach the code behind a successful lookup),
    and the operations in ``REFUSED_BY_MEANING``."""
    lines = [f'headers = {{ Authorization = "Bearer {SERVICE_TOKEN}" }}', ""]
    for kind in ("account", "user", "device"):
        lines += [f"[dictionaries.{kind}]", f"values = [{json.dumps(ids[kind])}]", ""]
    lines.append("[parameters]")
    # Ids in a body mostly real (else nearly every body is a 400 missing_reference), in paths half.
    for kind in ("account", "user", "device"):
        for where, probability in (("path", 0.5), ("query", 0.5), ("body", 0.9)):
            lines.append(f'"{where}.{kind}_id" = {{ dictionary = "{kind}", probability = {probability} }}')
    for name in ("created_by", "recipient_user_id", "actor_user_id"):
        lines.append(f'"body.{name}" = {{ dictionary = "user", probability = 0.9 }}')
    # A body over ROOST_MAX_BODY_BYTES is refused with 413 before it is parsed: a rejection too.
    lines += ["", "[checks.negative_data_rejection]",
              "expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]", ""]
    lines += ["[[operations]]", 'include-path-regex = "^/api/device/"',
              f'headers = {{ Authorization = "Bearer {ids["token"]}" }}', ""]
    lines += ["[[operations]]", f"include-name = {json.dumps(sorted(REFUSED_BY_MEANING))}",
              "[operations.checks.positive_data_acceptance]",
              'expected-statuses = ["2xx", 400, 401, 403, 404, 409, 429]', ""]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_schemathesis(url: str, config: Path, seed: int, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{url}/openapi.json", "--checks", CHECKS,
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


@pytest.mark.timeout(TIME_LIMIT_S + 60)  # its own subprocess limit, plus set-up
def test_every_check_over_every_operation_finds_nothing(server: ServerProcess, tmp_path: Path) -> None:
    """``--checks all``: no 5xx, no response outside its schema, no schema-invalid request taken,
    no schema-valid one refused (but for ``REFUSED_BY_MEANING``); the device API with a device token."""
    seed = int(os.environ.get("ROOST_FUZZ_SEED") or random.randrange(2**32))
    ids = seed_data(server.url)
    config = write_config(tmp_path / "schemathesis.toml", ids)

    result = run_schemathesis(server.url, config, seed)

    assert result.returncode == 0, explain(result, server, seed)
    assert generated_cases(result.stdout) > 500, result.stdout[-3000:]
    tested = re.search(r"Tested: (\d+)", result.stdout)
    selected = re.search(r"Selected: (\d+)/(\d+)", result.stdout)
    assert tested and selected and tested.group(1) == selected.group(2), result.stdout[-3000:]
    assert "Authentication failed" not in result.stdout, result.stdout[-3000:]
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
