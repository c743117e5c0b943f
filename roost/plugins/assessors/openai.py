"""The ``openai`` assessor: asks an OpenAI-compatible endpoint (the scout classifier's settings:
``OPENAI_BASE_URL``, ``OPENAI_MODEL``, ``OPENAI_API_KEY``) for a short assessment.

The answer must be a JSON object ``{"likely_cause": str, "next_steps": [str], "confidence":
"low"|"medium"|"high"}``; anything else raises, which the runner logs. The connection goes to a
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
SYSTEM_PROMPT = (
    "You help a support team pick up work a colleague handed off. From the notes and the snapshot, "
    "answer with one JSON object and nothing else: "
    '{"likely_cause": "<one sentence>", "next_steps": ["<step>", ...], "confidence": "low"|"medium"|"high"}.'
)


class OpenAIAssessor(Assessor):
    name = "openai"

    async def assess(self, handoff: dict[str, Any]) -> dict[str, Any] | None:
        base_url = default_base_url()
        model = os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
        api_key = os.environ.get("OPENAI_API_KEY") or ""
        user = (f"Intent: {handoff['intent']}\nPriority: {handoff['priority']}\nNotes: {handoff['notes']}\n"
                f"Snapshot: {json.dumps(handoff.get('snapshot'))[:SNAPSHOT_CHARS]}")
        request = {
            "model": model, "temperature": 0, "response_format": {"type": "json_object"},
            "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
        }
        # The runner's timeout bounds the call; this one only has to be longer.
        status, body = await post_json(f"{base_url}/chat/completions", request, api_key, 3600.0)
        if status != 200:
            raise ValueError(f"the assessor endpoint answered HTTP {status}")
        answer = json.loads(json.loads(body)["choices"][0]["message"]["content"])
        if not isinstance(answer, dict) or not isinstance(answer.get("likely_cause"), str):
            raise ValueError(f"not an assessment: {str(answer)[:200]}")
        steps = answer.get("next_steps") if isinstance(answer.get("next_steps"), list) else []
        confidence = answer.get("confidence") if answer.get("confidence") in ("low", "medium", "high") else "low"
        return {"assessor": self.name, "likely_cause": answer["likely_cause"][:1000],
                "next_steps": [str(s)[:500] for s in steps[:10]], "confidence": confidence}
