"""Transcripts, the files a processor reads: stat-only scan, and reading/hashing in worker threads.

Everything here is blocking and runs in a worker thread (``trio.to_thread``); nothing touches
the database. Per transcript, given what the processor last recorded (``FileState``):

* size and mtime_ns unchanged: never reaches this module's readers (the scan skips it: no read).
* same size, new mtime (touched): hashed once; identical content only records the new mtime.
* grown: a bounded probe (a head and a tail window of the old size) checks the processed prefix
  is unchanged, then only the bytes after ``processed_bytes`` are read and their complete lines
  handed to the processor; otherwise (or when shrunk) the file is processed again from the start.
* a trailing partial line is left after ``processed_bytes`` for the next run.

The recorded mtime is the scan's, taken before reading, so a write racing the read always shows
as a change on the next scan. A full read computes the content hash and the probe in one pass.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from roost.errors import PluginError, RoostError
from roost.plugins.guard import plugin_error
from roost.plugins.processors import Processor
from roost.storage.transcripts import FileState

CHUNK_BYTES = 4 << 20
PROBE_BYTES = 64 * 1024
SUFFIX = ".jsonl"

# (key "<user>/<file name>", size, mtime_ns): the shape of the stored fingerprints, so an unchanged
# file is a set lookup of the tuple the scan made, with no object built per file.
ScanRow = tuple[str, int, int]


def _hasher() -> Any:
    return hashlib.sha256()


@dataclass(slots=True)
class FileEntry:
    """One transcript as the scan saw it (made only for transcripts that changed)."""

    key: str  # "<user>/<file name>", the state's session_file
    username: str
    path: str
    size: int
    mtime_ns: int


@dataclass(slots=True)
class FileResult:
    entry: FileEntry
    outcome: Literal["processed", "skipped", "failed"]
    state: FileState | None = None
    items: list[Any] = field(default_factory=list)
    bytes_read: int = 0
    error: str | None = None


def users(root: str) -> list[str]:
    """The user folders under ``root`` (none when it does not exist)."""
    try:
        with os.scandir(root) as it:
            return sorted(e.name for e in it if e.is_dir())
    except FileNotFoundError:
        return []


def scan_folder(root: str, user: str) -> list[ScanRow]:
    """Every ``<root>/<user>/*.jsonl`` with its size and mtime: stat only, no content read.

    One folder per call, so several folders can be statted at once in worker threads (``stat``
    releases the GIL). Rows are plain tuples: at 100,000 files an object per file costs more than
    the comparison it feeds.
    """
    found: list[ScanRow] = []
    prefix = user + "/"
    try:
        it = os.scandir(os.path.join(root, user))
    except (FileNotFoundError, NotADirectoryError):
        return found
    with it:
        for e in it:
            name = e.name
            if not name.endswith(SUFFIX):
                continue
            try:
                if not e.is_file():
                    continue
                st = e.stat()
            except OSError:
                continue  # vanished between listing and stat
            found.append((prefix + name, st.st_size, st.st_mtime_ns))
    return found


def changed(root: str, rows: list[ScanRow], known: set[ScanRow]) -> list[FileEntry]:
    """The scanned files whose (key, size, mtime_ns) is not in ``known``: new or changed."""
    out = []
    base = os.path.join(root, "")  # the key is "<user>/<file name>": the path is base + key
    for row in rows:
        if row not in known:
            key, size, mtime_ns = row
            out.append(FileEntry(key, key.partition("/")[0], base + key, size, mtime_ns))
    return out


def _probe_suffix(size: int) -> bytes:
    return b"\n%d" % size


class _Reader:
    """An open file (a bare descriptor: no buffered-reader object per file) that counts the bytes it reads."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDONLY)
        self.bytes_read = 0

    def read_at(self, offset: int, size: int) -> bytes:
        parts = []
        while size > 0:
            data = os.pread(self.fd, size, offset)
            if not data:
                break
            parts.append(data)
            offset += len(data)
            size -= len(data)
        data = b"".join(parts) if len(parts) != 1 else parts[0]
        self.bytes_read += len(data)
        return data

    def probe(self, size: int) -> str:
        """The probe of the first ``size`` bytes: a hash of a bounded head and tail window, and the size.

        sha256(bytes[0 : min(P, size)] + bytes[max(P, size - P) : size] + b"\n<size>"), P = PROBE_BYTES.
        Up to 2P bytes that is the whole prefix, so a full read gets it from its running hash for free.
        """
        h = _hasher()
        h.update(self.read_at(0, min(PROBE_BYTES, size)))
        if size > PROBE_BYTES:
            start = max(PROBE_BYTES, size - PROBE_BYTES)
            h.update(self.read_at(start, size - start))
        h.update(_probe_suffix(size))
        return h.hexdigest()

    def close(self) -> None:
        os.close(self.fd)


def _stream(r: _Reader, start: int, processor: Processor, username: str,
            full: bool, size_hint: int) -> tuple[int, int, list[Any], str | None, str | None]:
    """Read from ``start`` to EOF in chunks; hand complete lines to the processor.

    ``size_hint`` is the size the scan saw. Up to it, each read asks for at most one byte more than
    the hint leaves (past it, whole chunks), so a small file is one read of its own size. Asking for
    a whole CHUNK_BYTES buffer per file made every read allocate (and fault in) 4 MiB, which made
    some first runs three times slower.

    With ``full`` (``start`` is 0), also hash the content and compute the probe on the way.
    Returns (end offset, offset after the last complete line, items, content hash, probe hash).
    """
    fd = r.fd
    items: list[Any] = []
    pos = start
    h = _hasher() if full else None
    head = None  # the running hash after the first PROBE_BYTES bytes (the probe's head window)
    last = before_last = b""  # the last two chunks: the probe's tail window lies within them
    pending = b""
    while True:
        want = CHUNK_BYTES if pos >= size_hint else min(CHUNK_BYTES, size_hint - pos + 1)
        chunk = os.pread(fd, want, pos)
        if not chunk:
            break
        n = len(chunk)
        r.bytes_read += n
        if h is not None:
            if head is None and pos + n > PROBE_BYTES:
                view = memoryview(chunk)
                h.update(view[:PROBE_BYTES - pos])
                head = h.copy()
                h.update(view[PROBE_BYTES - pos:])
            else:
                h.update(chunk)
            before_last, last = last, chunk
        pos += n
        cut = chunk.rfind(b"\n") + 1
        if cut == 0:
            pending += chunk
        else:
            block = pending + chunk[:cut] if pending else (chunk if cut == n else chunk[:cut])
            pending = chunk[cut:]
            try:  # the plugin boundary (a bare try: this runs once per chunk of every file)
                items.extend(processor.extract(username, block))
            except RoostError:
                raise
            except Exception as exc:
                raise plugin_error("processor", processor.name, exc) from exc
        if n < want:
            # A short read of a regular file is its end (no second read to learn it: most files are one
            # read). Were it not, the next scan would see a size larger than the one recorded and read on.
            break
    if h is None:
        return pos, pos - len(pending), items, None, None
    if pos <= 2 * PROBE_BYTES:
        probe = h.copy()  # the head and tail windows are the whole content
    else:
        probe = head  # type: ignore[assignment]
        if len(last) >= PROBE_BYTES:
            probe.update(last[-PROBE_BYTES:])
        elif len(before_last) + len(last) >= PROBE_BYTES:
            probe.update(before_last[len(before_last) + len(last) - PROBE_BYTES:] + last)
        else:  # short reads: read the window again
            probe.update(r.read_at(pos - PROBE_BYTES, PROBE_BYTES))
    probe.update(_probe_suffix(pos))
    return pos, pos - len(pending), items, h.hexdigest(), probe.hexdigest()


def process_full(entry: FileEntry, processor: Processor, r: _Reader) -> FileResult:
    size, done, items, digest, probe = _stream(r, 0, processor, entry.username, True, entry.size)
    # The scan's mtime, taken before reading: a write after it shows as a change on the next scan.
    state = FileState(entry.username, size, entry.mtime_ns, done, digest, probe, len(items))  # type: ignore[arg-type]
    return FileResult(entry, "processed", state, items)


class _NoLines(Processor):
    name = "hash_only"

    def extract(self, username: str, lines: bytes) -> list[Any]:
        return []


_NO_LINES = _NoLines()


def process_one(entry: FileEntry, previous: FileState | None, processor: Processor) -> FileResult:
    """Bring one file up to date for ``processor``; an I/O error or the processor's error fails
    this file only. Anything else is a bug in roost and is raised (to the run, then the supervisor)."""
    try:
        r = _Reader(entry.path)
    except OSError as exc:
        return FileResult(entry, "failed", error=f"{type(exc).__name__}: {exc}")
    try:
        result = _process_open(entry, previous, processor, r)
    except (OSError, RoostError) as exc:  # I/O, or the processor (PluginError): this file fails, not the run
        error = exc.message if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
        result = FileResult(entry, "failed", error=error[:500])
    finally:
        r.close()
    result.bytes_read = r.bytes_read
    return result


def _process_open(entry: FileEntry, prev: FileState | None, processor: Processor, r: _Reader) -> FileResult:
    if prev is None or entry.size < prev.size:
        return process_full(entry, processor, r)  # new, or truncated: from the start
    if entry.size == prev.size:
        # Touched: hash it once. Identical content only records the new mtime, so it is not hashed again.
        size, _, _, digest, probe = _stream(r, 0, _NO_LINES, entry.username, True, entry.size)
        same = size == prev.size and (digest == prev.content_hash if prev.content_hash is not None
                                      else probe == prev.probe_hash)
        if same:
            state = FileState(prev.username, prev.size, entry.mtime_ns, prev.processed_bytes, digest,  # type: ignore[arg-type]
                              probe, prev.items)  # type: ignore[arg-type]
            return FileResult(entry, "skipped", state)
        return process_full(entry, processor, r)
    # Grown: a bounded check that what was processed is still there, then only the new bytes.
    if r.probe(prev.size) != prev.probe_hash:
        return process_full(entry, processor, r)  # rewritten: from the start
    size, done, items, _, _ = _stream(r, prev.processed_bytes, processor, entry.username, False, entry.size)
    if size < prev.size:
        return process_full(entry, processor, r)  # shrank while we looked
    state = FileState(prev.username, size, entry.mtime_ns, done, None, r.probe(size), prev.items + len(items))
    return FileResult(entry, "processed", state, items)


def process_batch(work: list[tuple[FileEntry, FileState | None]], processor: Processor) -> list[FileResult]:
    """Several files in one worker-thread call (a thread hop per small file would cost more than the file)."""
    return [process_one(entry, previous, processor) for entry, previous in work]
