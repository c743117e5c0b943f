"""The file side of the session runners: stat-only scan, and reading/hashing in worker threads.

Everything here is blocking and runs in a worker thread (``trio.to_thread``); nothing touches
the database. Per file, given what the processor last recorded (``FileState``):

* size and mtime_ns unchanged: never reaches this module's readers (the scan skips it: no read).
* same size, new mtime (touched): hashed once; identical content only records the new mtime.
* grown: a bounded probe (a head and a tail window of the old size) checks the processed prefix
  is unchanged, then only the bytes after ``processed_bytes`` are read and their complete lines
  handed to the processor; otherwise (or when shrunk) the file is processed again from the start.
* a trailing partial line is left after ``processed_bytes`` for the next run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from roost.plugins.processors import SessionProcessor
from roost.storage.sessions import FileState

CHUNK_BYTES = 1 << 20
PROBE_BYTES = 64 * 1024
SUFFIX = ".jsonl"


def _hasher() -> Any:
    return hashlib.sha256()


@dataclass(slots=True)
class FileEntry:
    """One session file as the scan saw it."""

    key: str  # "<user>/<file name>", the state's session_file
    username: str
    path: str
    size: int
    mtime_ns: int


@dataclass
class FileResult:
    entry: FileEntry
    outcome: Literal["processed", "skipped", "failed"]
    state: FileState | None = None
    items: list[Any] = field(default_factory=list)
    bytes_read: int = 0
    error: str | None = None


def scan(root: str, user: str | None = None) -> list[FileEntry]:
    """Every ``<root>/<user>/*.jsonl`` with its size and mtime: stat only, no content read."""
    found: list[FileEntry] = []
    try:
        users = [user] if user is not None else sorted(e.name for e in os.scandir(root) if e.is_dir())
    except FileNotFoundError:
        return found
    for name in users:
        folder = os.path.join(root, name)
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for e in entries:
            if not e.name.endswith(SUFFIX):
                continue
            try:
                if not e.is_file():
                    continue
                st = e.stat()
            except OSError:
                continue  # vanished between listing and stat
            found.append(FileEntry(f"{name}/{e.name}", name, e.path, st.st_size, st.st_mtime_ns))
    found.sort(key=lambda f: f.key)
    return found


def unchanged(entry: FileEntry, state: FileState | None) -> bool:
    return state is not None and state.size == entry.size and state.mtime_ns == entry.mtime_ns


class _Reader:
    """An open file that counts the bytes it reads (the bench reports them)."""

    def __init__(self, path: str):
        self.f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.bytes_read = 0

    def read_at(self, offset: int, size: int) -> bytes:
        self.f.seek(offset)
        data = self.f.read(size)
        self.bytes_read += len(data)
        return data

    def probe(self, size: int) -> str:
        """Hash of the size and a bounded head and tail window of the first ``size`` bytes."""
        h = _hasher()
        h.update(str(size).encode() + b"\n")
        h.update(self.read_at(0, min(PROBE_BYTES, size)))
        if size > PROBE_BYTES:
            start = max(PROBE_BYTES, size - PROBE_BYTES)
            h.update(self.read_at(start, size - start))
        return h.hexdigest()

    def mtime_ns(self) -> int:
        """The mtime after reading: a write racing the read then shows as a change on the next scan."""
        return os.fstat(self.f.fileno()).st_mtime_ns

    def close(self) -> None:
        self.f.close()


def _probe_of(data_head: bytes, data_tail: bytes, size: int) -> str:
    """The probe computed from bytes in memory (the first and last ``PROBE_BYTES`` of ``size`` bytes)."""
    h = _hasher()
    h.update(str(size).encode() + b"\n")
    h.update(data_head[:min(PROBE_BYTES, size)])
    if size > PROBE_BYTES:
        start = max(PROBE_BYTES, size - PROBE_BYTES)
        h.update(data_tail[len(data_tail) - (size - start):])
    return h.hexdigest()


def _stream(r: _Reader, start: int, processor: SessionProcessor, username: str,
            full_hash: Any | None) -> tuple[int, int, list[Any], bytes, bytes]:
    """Read from ``start`` to EOF in chunks; hand complete lines to the processor.

    Returns (end offset, offset after the last complete line, items, head bytes, tail bytes).
    """
    r.f.seek(start)
    items: list[Any] = []
    pos = start
    head = b""
    tail = b""
    pending = b""
    while True:
        chunk = r.f.read(CHUNK_BYTES)
        if not chunk:
            break
        r.bytes_read += len(chunk)
        if full_hash is not None:
            full_hash.update(chunk)
        if pos < PROBE_BYTES:
            head += chunk[:PROBE_BYTES - pos]
        pos += len(chunk)
        tail = chunk[-PROBE_BYTES:] if len(chunk) >= PROBE_BYTES else (tail + chunk)[-PROBE_BYTES:]
        cut = chunk.rfind(b"\n") + 1
        if cut == 0:
            pending += chunk
            continue
        block = pending + chunk[:cut] if pending else (chunk if cut == len(chunk) else chunk[:cut])
        pending = chunk[cut:]
        items.extend(processor.extract(username, block))
    return pos, pos - len(pending), items, head, tail


def process_full(entry: FileEntry, processor: SessionProcessor, r: _Reader) -> FileResult:
    h = _hasher()
    size, done, items, head, tail = _stream(r, 0, processor, entry.username, h)
    state = FileState(entry.username, size, r.mtime_ns(), done, h.hexdigest(), _probe_of(head, tail, size),
                      len(items))
    return FileResult(entry, "processed", state, items)


def process_one(entry: FileEntry, previous: FileState | None, processor: SessionProcessor) -> FileResult:
    """Bring one file up to date for ``processor``; any error fails this file only."""
    try:
        r = _Reader(entry.path)
    except OSError as exc:
        return FileResult(entry, "failed", error=f"{type(exc).__name__}: {exc}")
    try:
        result = _process_open(entry, previous, processor, r)
    except Exception as exc:  # a processor bug or an I/O error fails this file, not the run
        result = FileResult(entry, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
    finally:
        r.close()
    result.bytes_read = r.bytes_read
    return result


def _process_open(entry: FileEntry, prev: FileState | None, processor: SessionProcessor, r: _Reader) -> FileResult:
    if prev is None or entry.size < prev.size:
        return process_full(entry, processor, r)  # new, or truncated: from the start
    if entry.size == prev.size:
        # Touched: hash it once. Identical content only records the new mtime, so it is not hashed again.
        h = _hasher()
        head, tail, size = b"", b"", 0
        r.f.seek(0)
        while chunk := r.f.read(CHUNK_BYTES):
            r.bytes_read += len(chunk)
            h.update(chunk)
            if size < PROBE_BYTES:
                head += chunk[:PROBE_BYTES - size]
            size += len(chunk)
            tail = chunk[-PROBE_BYTES:] if len(chunk) >= PROBE_BYTES else (tail + chunk)[-PROBE_BYTES:]
        digest = h.hexdigest()
        same = digest == prev.content_hash if prev.content_hash is not None else (
            size == prev.size and _probe_of(head, tail, size) == prev.probe_hash)
        if same and size == prev.size:
            state = FileState(prev.username, prev.size, entry.mtime_ns, prev.processed_bytes, digest,
                              prev.probe_hash, prev.items)
            return FileResult(entry, "skipped", state)
        return process_full(entry, processor, r)
    # Grown: a bounded check that what was processed is still there, then only the new bytes.
    if r.probe(prev.size) != prev.probe_hash:
        return process_full(entry, processor, r)  # rewritten: from the start
    size, done, items, _, _ = _stream(r, prev.processed_bytes, processor, entry.username, None)
    if size < prev.size:
        return process_full(entry, processor, r)  # shrank while we looked
    state = FileState(prev.username, size, r.mtime_ns(), done, None, r.probe(size), prev.items + len(items))
    return FileResult(entry, "processed", state, items)


def process_batch(work: list[tuple[FileEntry, FileState | None]], processor: SessionProcessor) -> list[FileResult]:
    """Several files in one worker-thread call (a thread hop per small file would cost more than the file)."""
    return [process_one(entry, previous, processor) for entry, previous in work]
