"""File transport: each message becomes ``<dir>/<message-id>.eml`` (written to a temp name, then renamed)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from roost.plugins.transports import PermanentError, TransientError

_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


@dataclass
class FileTransport:
    directory: str
    name: str = "file"

    def send(self, message: EmailMessage) -> None:
        target = Path(self.directory)
        stem = _UNSAFE.sub("_", str(message["Message-ID"] or "message").strip("<>"))
        try:
            target.mkdir(parents=True, exist_ok=True)
            tmp = target / f".{stem}.tmp"
            tmp.write_bytes(message.as_bytes())
            os.replace(tmp, target / f"{stem}.eml")  # same Message-ID again overwrites: one file per message
        except PermissionError as exc:
            raise PermanentError(f"cannot write to {target}: {exc}") from exc
        except OSError as exc:
            raise TransientError(f"cannot write to {target}: {exc}") from exc
