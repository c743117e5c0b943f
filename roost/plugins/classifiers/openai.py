"""The ``openai`` classifier: any OpenAI-compatible chat-completions endpoint, through httpx on trio.

Config (each falls back to the environment; the key is a secret, redacted and sealed)::

    {"base_url": "https://api.openai.com/v1",   # env OPENAI_BASE_URL
     "model": "gpt-4o-mini",                     # env OPENAI_MODEL
     "api_key": "...",                           # env OPENAI_API_KEY
     "timeout_s": 20,
     "instructions": "what counts as relevant for this user"}

The model must answer with a JSON object ``{"verdict": "relevant"|"spam", "reason": str,
"category"?: str}`` and nothing else. A timeout, a transport or HTTP error, or any other answer
raises ``TriageUnavailable``: the item is retried later, never taken for spam.

The server's own ``OPENAI_API_KEY`` goes only to its own endpoint (``OPENAI_BASE_URL``, else
OpenAI's): a scout that sets another ``base_url`` sends its own ``api_key`` or none. Every
connection goes to a vetted address (``roost.runtime.destinations``: no loopback, private,
link-local or metadata address unless ``ROOST_ALLOWED_DESTINATIONS`` allows it), the answer is
read up to ``MAX_ANSWER_BYTES``, and errors name their kind, never the remote side's text.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import urlsplit

import trio

from roost.errors import InvalidInput
from roost.plugins.classifiers import Classifier, TriageUnavailable, Verdict
from roost.plugins.connectors import Content, bounded
from roost.runtime import destinations

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT_S = 20.0
BODY_CHARS = 4000
MAX_ANSWER_BYTES = 256 * 1024
_KEYS = {"base_url", "model", "api_key", "timeout_s", "instructions"}

SYSTEM_PROMPT = (
    "You triage incoming messages for one person. Decide whether the message is relevant to them "
    "or spam. Answer with one JSON object and nothing else: "
    '{"verdict": "relevant" or "spam", "reason": "<one short sentence>", "category": "<one word>"}.'
)


class OpenAIClassifier(Classifier):
    name = "openai"

    def check_config(self, config: dict[str, Any]) -> None:
        unknown = set(config) - _KEYS
        if unknown:
            raise InvalidInput(f"openai classifier: unknown keys {sorted(unknown)}; known: {sorted(_KEYS)}")
        for key in ("base_url", "model", "api_key", "instructions"):
            if key in config and not isinstance(config[key], str):
                raise InvalidInput(f"openai classifier: {key} must be a string")
        base = config.get("base_url")
        if base is not None:
            try:
                parts = urlsplit(base)
                parts.port  # noqa: B018 - raises ValueError for a bad port
            except ValueError as exc:
                raise InvalidInput("openai classifier: base_url must be an http(s) URL") from exc
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise InvalidInput("openai classifier: base_url must be an http(s) URL")
        timeout = config.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
            raise InvalidInput("openai classifier: timeout_s must be a number in (0, 300]")

    def destinations(self, config: dict[str, Any]) -> list[tuple[str, int]]:
        # Only what the scout names: the server's own endpoint is the operator's (still vetted at connect).
        return [url_destination(config["base_url"])] if config.get("base_url") else []

    async def classify(self, config: dict[str, Any], content: Content) -> Verdict:
        base_url = (config.get("base_url") or default_base_url()).rstrip("/")
        model = config.get("model") or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
        api_key = api_key_for(base_url, config.get("api_key"))
        content = bounded(content)
        timeout = float(config.get("timeout_s", DEFAULT_TIMEOUT_S))
        system = SYSTEM_PROMPT
        if config.get("instructions"):
            system += f"\nAbout this person: {config['instructions']}"
        user = (f"From: {content.sender}\nSubject: {content.subject}\n\n{content.body[:BODY_CHARS]}")
        request = {
            "model": model,
            "temperature": 0,
            "response_format": {"type": "json_object"},
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }
        status, body = await post_json(f"{base_url}/chat/completions", request, api_key, timeout)
        if status == 401 or status == 403:
            raise TriageUnavailable(f"auth: {_where(base_url)} refused the API key (HTTP {status})")
        if status != 200:
            raise TriageUnavailable(f"bad_answer: {_where(base_url)} answered HTTP {status}")
        return parse_answer(body)


def default_base_url() -> str:
    """The server's own endpoint: ``OPENAI_BASE_URL``, else OpenAI's."""
    return (os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def api_key_for(base_url: str, own_key: str | None) -> str:
    """The key to send to ``base_url``: the scout's own, else the server's only for the server's endpoint."""
    if own_key:
        return own_key
    if base_url.rstrip("/") == default_base_url():
        return os.environ.get("OPENAI_API_KEY") or ""
    return ""


def url_destination(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _where(base_url: str) -> str:
    host, port = url_destination(base_url)
    return f"{host}:{port}"


async def post_json(url: str, request: dict[str, Any], api_key: str, timeout_s: float) -> tuple[int, bytes]:
    """POST ``request`` to ``url`` through a vetted connection; the status and at most MAX_ANSWER_BYTES.

    Raises:
        TriageUnavailable: with the failure's kind (blocked, timeout, refused, tls, ...), no remote text.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    where = _where(url)
    try:
        with trio.fail_after(timeout_s):
            async with destinations.http_client(timeout_s) as client:
                async with client.stream("POST", url, json=request, headers=headers) as response:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_ANSWER_BYTES:
                            raise destinations.RemoteError(
                                "bad_answer", f"{where} answered over {MAX_ANSWER_BYTES} bytes")
                        chunks.append(chunk)
                    return response.status_code, b"".join(chunks)
    except Exception as exc:  # noqa: BLE001 - every transport failure becomes "unavailable", by kind
        raise TriageUnavailable(str(destinations.classify_error(exc, where))) from exc


def parse_answer(body: bytes) -> Verdict:
    """The verdict in a chat-completions answer (its bytes).

    Raises:
        TriageUnavailable: the answer is not the strict JSON verdict asked for.
    """
    try:
        text = json.loads(body)["choices"][0]["message"]["content"]
        answer = json.loads(text)
    except (ValueError, KeyError, IndexError, TypeError, RecursionError) as exc:
        raise TriageUnavailable("bad_answer: the model's answer is not a JSON verdict") from exc
    if not isinstance(answer, dict) or answer.get("verdict") not in ("relevant", "spam"):
        raise TriageUnavailable("bad_answer: the model's verdict is not 'relevant' or 'spam'")
    reason = answer.get("reason")
    category = answer.get("category", "inbox")
    if not isinstance(reason, str) or not reason.strip() or not isinstance(category, str):
        raise TriageUnavailable("bad_answer: the model's answer lacks a reason or has a bad category")
    return Verdict(answer["verdict"], reason.strip()[:500], category[:64] or "inbox")
