"""The probe and content hash a full read computes on the way equal the ones computed from the file.

A mismatch would not lose data (the file would be processed again from the start), but every
grown file would then be read in full: the append bar would silently go.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from roost.actors import session_files
from roost.actors.session_files import PROBE_BYTES, FileEntry, _Reader, process_full
from roost.plugins.processors import SessionProcessor


class Nothing(SessionProcessor):
    name = "nothing"

    def extract(self, username: str, lines: bytes) -> list:
        return []


def content(size: int) -> bytes:
    line = b'{"type":"user","n":12345}\n'
    return (line * (size // len(line) + 1))[:size]


SIZES = [0, 1, PROBE_BYTES - 1, PROBE_BYTES, PROBE_BYTES + 1, 2 * PROBE_BYTES - 1, 2 * PROBE_BYTES,
         2 * PROBE_BYTES + 1, 300_000, 350_000, 400_001]


@pytest.mark.parametrize("chunk", [1 << 20, 100_000, 65_536])  # a short last chunk puts the tail across two chunks
@pytest.mark.parametrize("size", SIZES)
def test_a_full_read_records_the_probe_a_later_run_recomputes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               size: int, chunk: int) -> None:
    monkeypatch.setattr(session_files, "CHUNK_BYTES", chunk)
    data = content(size)
    path = tmp_path / "s.jsonl"
    path.write_bytes(data)
    entry = FileEntry("u/s.jsonl", "u", str(path), size, path.stat().st_mtime_ns)
    r = _Reader(str(path))
    try:
        result = process_full(entry, Nothing(), r)
        assert result.state is not None
        assert result.state.content_hash == hashlib.sha256(data).hexdigest()
        assert result.state.probe_hash == r.probe(size)
    finally:
        r.close()


def test_the_probe_covers_the_head_and_tail_windows_and_the_size(tmp_path: Path) -> None:
    data = bytearray(content(400_000))
    path = tmp_path / "s.jsonl"
    path.write_bytes(data)
    r = _Reader(str(path))
    try:
        before = r.probe(len(data))
    finally:
        r.close()
    for offset in (0, PROBE_BYTES - 1, len(data) - PROBE_BYTES, len(data) - 1):
        changed = bytearray(data)
        changed[offset] ^= 1
        path.write_bytes(changed)
        r = _Reader(str(path))
        try:
            assert r.probe(len(data)) != before, offset
        finally:
            r.close()
