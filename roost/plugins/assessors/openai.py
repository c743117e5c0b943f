"""The ``openai`` assessor: asks an OpenAI-compatible endpoint (the scout classifier's settings:
``OPENAI_BASE_URL``, ``OPENAI_MODEL``, ``OPENAI_API_KEY``) for a short assessment, and for a
briefing of whoever claims a handoff.

The assessment must be a JSON object ``{"likely_cause": str, "next_steps": [str], "confidence":
"low"|"medium"|"high"}``, the briefing plain text; anything else raises, which the runner logs. The connection goes to a
vetted address only (``roost.runtime.destinations``; a self-hosted endpoint on a private address
needs ``ROOST_ALLOWED_DESTINATIONS``) and the answer is read up to ``MAX_ANSWER_BYTES``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from roost.plugins.assessors import Assessor
from roost.plugins.classifiers.openai import DEFAULT_MODEL, default_base_url, post_json

SNAPSHOT_CHARS = 6000
BRIEFING_PROMPT = (
    "You brief a support engineer who just took over work a colleague handed off. From the handoff's "
    "notes, snapshot and assessment, write a short briefing in plain text (at most 150 words): what "
    "the problem is, what was tried, and what to do first."
)
SYSTEM_PROMPT = (
    "You help a support team pick up work a colleague handed off. From the notes and the snapshot, "
    "answer with one JSON object and nothing else: "
    '{"likely_cause": "<one sentence>", "next_steps": ["<step>", ...], "confidence": "low"|"medium"|"high"}.'
)


class OpenAIAssessor(Assessor):
    name = "openai"

    async def assess(self, handoff: dict[str, Any]) -> dict[str, Any] | None:
        answer = json.loads(await _chat(SYSTEM_PROMPT, _describe(handoff), json_object=True))
        if not isinstance(answer, dict) or not isinstance(answer.get("likely_cause"), str):
            raise ValueError(f"not an assessment: {str(answer)[:200]}")
        steps = answer.get("next_steps") if isinstance(answer.get("next_steps"), list) else []
        confidence = answer.get("confidence") if answer.get("confidence") in ("low", "medium", "high") else "low"
        return {"assessor": self.name, "likely_cause": answer["likely_cause"][:1000],
                "next_steps": [str(s)[:500] for s in steps[:10]], "confidence": confidence}

    async def brief(self, handoff: dict[str, Any], claimer: dict[str, Any]) -> str | None:
        user = (f"{_describe(handoff)}\nAssessment: {json.dumps(handoff.get('assessment'))[:SNAPSHOT_CHARS]}\n"
                f"Claimed by: {claimer.get('display_name')} (role {claimer.get('role')},"
                f" team {claimer.get('team') or 'none'})")
        text = (await _chat(BRIEFING_PROMPT, user, json_object=False)).strip()
        return text or None


def _describe(handoff: dict[str, Any]) -> str:
    return (f"Intent: {handoff['intent']}\nPriority: {handoff['priority']}\nNotes: {handoff['notes']}\n"
            f"Snapshot: {json.dumps(handoff.get('snapshot'))[:SNAPSHOT_CHARS]}")


async def _chat(system: str, user: str, *, json_object: bool) -> str:
    """One chat completion from the server's endpoint; the answer's text.

    Raises:
        TriageUnavailable: the endpoint could not be reached (by kind, no remote text).
        ValueError: it answered other than HTTP 200 with a completion.
    """
    request: dict[str, Any] = {
        "model": os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL, "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
    }
    if json_object:
        request["response_format"] = {"type": "json_object"}
    # The runner's timeout bounds the call; this one only has to be longer.
    status, body = await post_json(f"{default_base_url()}/chat/completions", request,
                                   os.environ.get("OPENAI_API_KEY") or "", 3600.0)
    if status != 200:
        raise ValueError(f"the assessor endpoint answered HTTP {status}")
    content = json.loads(body)["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise ValueError("the completion has no text")
    return content
