"""How the body of each version is kept in `resource_history`, and read back.

The current version's JSON lives once, uncompressed, in `resources.body` (reads and searches
use it as it is). Its history row keeps no copy: `zbody` is NULL and readers take the body
from the resource row of the same pid and version (`VERSIONS` joins it). When a version is
superseded (an update or a delete), the repository writes its body into `zbody`, compressed
with `encode`. A deletion version has no body at all.

`zbody` format: one byte naming the encoding, then the data.
  1: raw deflate (zlib level 6) of the UTF-8 JSON with preset dictionary 1
     (`history_dictionaries/1.bin`, built by `tools/history_dictionary.py`).
A dictionary in use never changes; a new one gets a new format byte, and `decode` keeps
reading every format ever written. Why zlib with a dictionary: on the benchmark population's
bodies (about 900 bytes each) it stores a third of the bytes where plain zlib or zstd store
about half, the Python standard library has it, and decoding costs microseconds
(README, Benchmarks: history storage).

Every reader of history bodies goes through `VERSIONS` and `body` (repository, outcomes).
"""

from __future__ import annotations

import zlib
from functools import cache
from pathlib import Path

from sqlalchemy import and_

from fhir_server.storage.schema import history, resources

DEFLATE_DICT_1 = 1
_LEVEL = 6
_WBITS = -15  # raw deflate, 32 KiB window: no zlib header or checksum (5 bytes a body)
_DICTIONARIES = Path(__file__).with_name("history_dictionaries")

# The resource row of the same version: present only while that version is the current one.
CURRENT = resources.alias("current_version")
VERSIONS = history.outerjoin(
    CURRENT, and_(CURRENT.c.pid == history.c.pid, CURRENT.c.version == history.c.version))


@cache
def dictionary(number: int) -> bytes:
    """Preset dictionary `number` (shipped with the package, never edited)."""
    return (_DICTIONARIES / f"{number}.bin").read_bytes()


@cache
def _compressor() -> zlib._Compress:
    """A compressor primed with the dictionary; each body compresses with a copy of it
    (copying costs less than loading the dictionary again)."""
    return zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, zdict=dictionary(DEFLATE_DICT_1))


@cache
def _decompressor(number: int) -> zlib._Decompress:
    return zlib.decompressobj(_WBITS, zdict=dictionary(number))


def encode(body: str) -> bytes:
    """The stored form of a superseded version's JSON text."""
    compressor = _compressor().copy()
    return bytes((DEFLATE_DICT_1,)) + compressor.compress(body.encode()) + compressor.flush()


def decode(stored: bytes | memoryview) -> str:
    """The JSON text of a stored `zbody` (any format ever written)."""
    data = bytes(stored)
    if not data or data[0] != DEFLATE_DICT_1:
        raise ValueError(f"unknown history body format {data[:1]!r}")
    decompressor = _decompressor(DEFLATE_DICT_1).copy()
    return (decompressor.decompress(data[1:]) + decompressor.flush()).decode()


def body(deleted: bool, zbody: bytes | memoryview | None, current_body: str | None,
         ) -> str | None:
    """The JSON text of one version from a `VERSIONS` row: None for a deletion, the stored
    copy of a superseded version, the resource row's body for the current version."""
    if deleted:
        return None
    if zbody is not None:
        return decode(zbody)
    if current_body is None:
        raise LookupError("a history version has neither a stored body nor a current one")
    return current_body
