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
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import trio

from roost.errors import InvalidInput
from roost.plugins.classifiers import Classifier, TriageUnavailable, Verdict
from roost.plugins.connectors import Content

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT_S = 20.0
BODY_CHARS = 4000
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
        if base is not None and not base.startswith(("http://", "https://")):
            raise InvalidInput("openai classifier: base_url must be an http(s) URL")
        timeout = config.get("timeout_s", DEFAULT_TIMEOUT_S)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
            raise InvalidInput("openai classifier: timeout_s must be a number in (0, 300]")

    async def classify(self, config: dict[str, Any], content: Content) -> Verdict:
        base_url = (config.get("base_url") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        model = config.get("model") or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
        api_key = config.get("api_key") or os.environ.get("OPENAI_API_KEY") or ""
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
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        try:
            with trio.fail_after(timeout):
                async with httpx.AsyncClient(timeout=timeout) as client:
                    response = await client.post(f"{base_url}/chat/completions", json=request, headers=headers)
        except trio.TooSlowError as exc:
            raise TriageUnavailable(f"no answer from {base_url} within {timeout:g}s") from exc
        except httpx.HTTPError as exc:
            raise TriageUnavailable(f"cannot reach {base_url}: {exc!r}") from exc
        if response.status_code != 200:
            raise TriageUnavailable(f"{base_url} answered {response.status_code}: {response.text[:200]}")
        return parse_answer(response)


def parse_answer(response: httpx.Response) -> Verdict:
    """The verdict in a chat-completions answer.

    Raises:
        TriageUnavailable: the answer is not the strict JSON verdict asked for.
    """
    try:
        text = response.json()["choices"][0]["message"]["content"]
        answer = json.loads(text)
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise TriageUnavailable(f"the model's answer is not a JSON verdict: {response.text[:200]}") from exc
    if not isinstance(answer, dict) or answer.get("verdict") not in ("relevant", "spam"):
        raise TriageUnavailable(f"the model's verdict is not 'relevant' or 'spam': {str(answer)[:200]}")
    reason = answer.get("reason")
    category = answer.get("category", "inbox")
    if not isinstance(reason, str) or not reason.strip() or not isinstance(category, str):
        raise TriageUnavailable(f"the model's answer lacks a reason or has a bad category: {str(answer)[:200]}")
    return Verdict(answer["verdict"], reason.strip()[:500], category[:64] or "inbox")
