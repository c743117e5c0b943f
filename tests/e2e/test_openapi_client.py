"""/openapi.json as a client generator reads it: a valid OpenAPI document with readable names, and
a client generated from it by ``openapi-python-client`` that runs an app's scenario against a real
``roost serve`` (tests/e2e/openapi_client_scenario.py)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from openapi_spec_validator import validate

from tests.support.server import SERVICE_TOKEN, ServerProcess

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent
SCENARIO = Path(__file__).with_name("openapi_client_scenario.py")
ERROR_RESPONSE = {"$ref": "#/components/responses/Error"}
OWN_ERROR_BODIES = {("/readyz", "503")}  # not ready: the probe's own body, which says what is not running


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess.start(database_url, tmp_path)
    try:
        yield process
    finally:
        assert process.terminate() == 0, process.log()


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess.start(f"sqlite:///{tmp_path / 'roost.db'}", tmp_path)
    try:
        yield process
    finally:
        process.terminate()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_the_document_passes_openapi_spec_validator(sqlite_server: ServerProcess) -> None:
    spec = httpx.get(f"{sqlite_server.url}/openapi.json").json()

    validate(spec)  # raises on an invalid document, e.g. one operation id on two operations


def test_every_operation_has_a_readable_unique_id_a_summary_and_one_tag(sqlite_server: ServerProcess) -> None:
    spec = httpx.get(f"{sqlite_server.url}/openapi.json").json()
    ids = [op.get("operationId") for _, _, op in operations(spec)]
    tags = {tag["name"] for tag in spec["tags"]}

    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    for path, method, operation in operations(spec):
        where = f"{method.upper()} {path}"
        assert re.fullmatch(r"[a-z]+[A-Za-z0-9]*", operation["operationId"]), where
        assert not re.match(r"(get|post|put|patch|delete)(Get|Post|Put|Patch|Delete|List|Create)",
                            operation["operationId"]), where  # quart-schema's method-prefixed name
        assert operation.get("summary", "").strip(), f"{where} has no summary (a docstring on its route function)"
        assert len(operation["summary"]) <= 120 and "\n" not in operation["summary"], where
        assert len(operation["tags"]) == 1 and operation["tags"][0] in tags and operation["tags"][0] != "default", where
    assert {"tenancy", "scouts", "dispatch", "device", "handoffs", "notifications", "processors", "ops"} <= tags


def test_bodies_are_named_schemas_and_every_error_is_the_one_error_response(sqlite_server: ServerProcess) -> None:
    spec = httpx.get(f"{sqlite_server.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]

    error = spec["components"]["responses"]["Error"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorBody"}
    detail = schemas["ErrorDetail"]
    assert {"code", "message"} <= set(detail["required"]), detail
    for path, method, operation in operations(spec):
        where = f"{method.upper()} {path}"
        bodies = [media["schema"] for media in operation.get("requestBody", {}).get("content", {}).values()]
        for status, response in operation["responses"].items():
            if int(status) >= 400 and (path, status) not in OWN_ERROR_BODIES:
                assert response == ERROR_RESPONSE, (where, status)
            else:
                bodies += [media["schema"] for media in response.get("content", {}).values()]
        for body in bodies:
            assert set(body) == {"$ref"} and body["$ref"].removeprefix("#/components/schemas/") in schemas, where
    for name, schema in schemas.items():
        assert schema["title"] == name and re.fullmatch(r"[A-Z][A-Za-z0-9]*", name), name
    assert {"Account", "AccountCreate", "User", "UserPage", "Scout", "Batch", "TimeZone"} <= set(schemas)


def test_the_document_states_the_servers_constraints(sqlite_server: ServerProcess) -> None:
    spec = httpx.get(f"{sqlite_server.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    usage = {p["name"]: p["schema"] for p in spec["paths"]["/api/v1/usage"]["get"]["parameters"]}
    patch = schemas["UserPatch"]["properties"]

    assert usage["from"]["anyOf"][0]["format"] == "date"
    assert "Europe/Berlin" in schemas["TimeZone"]["enum"] and "Mars/Olympus" not in schemas["TimeZone"]["enum"]
    assert schemas["AccountCreate"]["properties"]["timezone"]["$ref"] == "#/components/schemas/TimeZone"
    assert "anyOf" not in patch["email"] and patch["email"]["type"] == "string"  # null is refused
    assert {"type": "null"} in patch["quiet_hours"]["anyOf"]  # null clears them
    assert re.fullmatch(schemas["QuietHours"]["properties"]["start"]["pattern"], "23:59")
    assert not re.fullmatch(schemas["QuietHours"]["properties"]["start"]["pattern"], "24:00")
    assert not re.fullmatch(schemas["AccountCreate"]["properties"]["name"]["pattern"], "a\x00b")
    assert {"imap", "push"} <= set(schemas["ScoutCreate"]["properties"]["provider"]["enum"])


@pytest.mark.timeout(240)  # generating the client (and formatting it with ruff) takes 5-20 s
def test_a_generated_client_creates_and_reads_back_and_sends_through_a_polling_device(
    server: ServerProcess, tmp_path: Path
) -> None:
    spec = tmp_path / "openapi.json"
    spec.write_bytes(httpx.get(f"{server.url}/openapi.json").content)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}

    generated = subprocess.run(
        [str(BIN / "openapi-python-client"), "generate", "--path", str(spec), "--meta", "none",
         "--output-path", str(tmp_path / "roost_api_client")],
        capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env,
    )
    output = generated.stdout + generated.stderr
    assert generated.returncode == 0, output
    assert "Warning" not in output and "WARNING" not in output and "Unable to" not in output, output

    scenario = subprocess.run(
        [sys.executable, str(SCENARIO), server.url, SERVICE_TOKEN], capture_output=True, text=True, timeout=60,
        cwd=tmp_path, env={**env, "PYTHONPATH": str(tmp_path)},
    )
    assert scenario.returncode == 0 and "scenario ok" in scenario.stdout, scenario.stdout + scenario.stderr
