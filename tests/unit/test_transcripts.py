"""The probe and content hash a full read computes on the way equal the ones computed from the file.

A mismatch would not lose data (the file would be processed again from the start), but every
grown file would then be read in full: the append bar would silently go.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from roost.domain import transcripts
from roost.domain.transcripts import PROBE_BYTES, FileEntry, _Reader, process_full
from roost.plugins.processors import Processor


class Nothing(Processor):
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
    monkeypatch.setattr(transcripts, "CHUNK_BYTES", chunk)
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


class Lines(Processor):
    name = "lines"

    def extract(self, username: str, lines: bytes) -> list:
        return lines.splitlines()


@pytest.mark.parametrize("seen", [0, 1_000, 100_000])
def test_a_file_that_grew_after_the_scan_is_read_to_its_end_in_whole_chunks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seen: int) -> None:
    # The scan saw `seen` bytes; 300,000 are there when it is read. Everything is read and hashed,
    # and past the scan's size the reads are whole chunks, not a byte at a time.
    monkeypatch.setattr(transcripts, "CHUNK_BYTES", 65_536)
    data = content(300_000)
    path = tmp_path / "s.jsonl"
    path.write_bytes(data)
    reads: list[int] = []
    real_pread = transcripts.os.pread

    def counting_pread(fd: int, n: int, offset: int) -> bytes:
        reads.append(n)
        return real_pread(fd, n, offset)

    monkeypatch.setattr(transcripts.os, "pread", counting_pread)
    entry = FileEntry("u/s.jsonl", "u", str(path), seen, path.stat().st_mtime_ns)
    r = _Reader(str(path))
    try:
        result = process_full(entry, Lines(), r)
    finally:
        r.close()
    assert result.state is not None
    assert result.state.size == len(data)
    assert result.state.processed_bytes == len(data) - len(data) % 26  # up to the last complete line
    assert result.state.content_hash == hashlib.sha256(data).hexdigest()
    assert len(result.items) == len(data) // 26
    assert len(reads) <= len(data) // 65_536 + 3


def test_a_small_file_is_one_read_of_its_own_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = content(5_000)
    path = tmp_path / "s.jsonl"
    path.write_bytes(data)
    reads: list[int] = []
    real_pread = transcripts.os.pread
    monkeypatch.setattr(transcripts.os, "pread", lambda fd, n, off: reads.append(n) or real_pread(fd, n, off))
    entry = FileEntry("u/s.jsonl", "u", str(path), len(data), path.stat().st_mtime_ns)
    r = _Reader(str(path))
    try:
        result = process_full(entry, Nothing(), r)
    finally:
        r.close()
    assert result.state is not None and result.state.size == len(data)
    assert reads == [len(data) + 1]
