"""File transport: each message becomes ``<dir>/<message-id>.eml`` (written to a temp name, then renamed)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from roost.plugins.transports import PermanentError, TransientError
from roost.plugins.transports.message import Mail

_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


@dataclass
class FileTransport:
    directory: str
    name: str = "file"
    _made: bool = field(default=False, repr=False)

    def send(self, mail: Mail) -> None:
        stem = _UNSAFE.sub("_", mail.message_id.strip("<>") or "message")
        tmp = os.path.join(self.directory, f".{stem}.tmp")
        try:
            if not self._made:
                os.makedirs(self.directory, exist_ok=True)
                self._made = True
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(mail.data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            # A reader never sees half a message; the same Message-ID again overwrites: one file per message.
            os.replace(tmp, os.path.join(self.directory, f"{stem}.eml"))
        except PermissionError as exc:
            raise PermanentError(f"cannot write to {self.directory}: {exc}") from exc
        except OSError as exc:
            self._made = False  # the directory may have gone: make it again on the next try
            raise TransientError(f"cannot write to {self.directory}: {exc}") from exc
