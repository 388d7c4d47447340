"""Which codec for history bodies: compressed size and per-body encode / decode time of the
candidates on the bodies of a loaded database (one body at a time, as history stores them).

    python bench/history_codecs.py DATABASE_URL [--limit 20000]

DATABASE_URL: a database loaded by `bench/search_bench.py` or `bench/history_bench.py`
(SQLite files stay in their temporary folder). Candidates: zlib (standard library) without
and with our preset dictionary (`history_bodies.encode`); zstd level 3 and 9 without a
dictionary, with our dictionary as raw content, and with a dictionary zstd trains from the
same HL7 examples, when the `zstandard` package is installed (it is not a dependency).
Times are CPU time of this process (time.process_time: steadier than wall time on a shared
machine), the best of 3 passes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, text  # noqa: E402

from fhir_server.storage import history_bodies  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
Codec = tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]


def bodies(url: str, limit: int) -> list[bytes]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT body FROM resources WHERE body IS NOT NULL "
                                 "ORDER BY pid LIMIT :n"), {"n": limit}).scalars().all()
    engine.dispose()
    return [row.encode() for row in rows]


def hl7_samples() -> list[bytes]:
    """The HL7 examples shipped for the tests (R4 core and Gravity), compact JSON."""
    data = ROOT / "tests" / "data"
    examples = list(json.loads(gzip.decompress(
        (data / "fhir-r4" / "r4-examples.json.gz").read_bytes())).values())
    examples += [json.loads(p.read_text()) for p in
                 sorted((data / "gravity" / "examples-2.3.0").glob("*.json"))]
    return [json.dumps(r, separators=(",", ":")).encode() for r in examples]


def candidates() -> dict[str, Codec]:
    def plain_zlib(level: int) -> Codec:
        def enc(b: bytes) -> bytes:
            c = zlib.compressobj(level, zlib.DEFLATED, -15)
            return c.compress(b) + c.flush()
        return enc, lambda z: zlib.decompress(z, -15)

    out: dict[str, Codec] = {
        "zlib 6": plain_zlib(6),
        "zlib 6 + our dictionary (chosen)": (
            lambda b: history_bodies.encode(b.decode()),
            lambda z: history_bodies.decode(z).encode()),
    }
    try:
        import zstandard
    except ImportError:
        print("zstandard is not installed: zstd candidates skipped")
        return out
    ours = zstandard.ZstdCompressionDict(history_bodies.dictionary(1),
                                         dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    trained = zstandard.train_dictionary(32768, hl7_samples())
    for level in (3, 9):
        for name, dictionary in (("", None), (" + our dictionary", ours),
                                 (" + trained dictionary", trained)):
            kw = {"dict_data": dictionary} if dictionary else {}
            compressor = zstandard.ZstdCompressor(level, write_checksum=False,
                                                  write_dict_id=False, **kw)
            out[f"zstd {level}{name}"] = (compressor.compress,
                                          zstandard.ZstdDecompressor(**kw).decompress)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("--limit", type=int, default=20_000)
    args = ap.parse_args()
    sample = bodies(args.url, args.limit)
    raw = sum(map(len, sample))
    print(f"{len(sample):,} bodies, mean {raw / len(sample):,.0f} bytes")
    print(f"{'codec':36} {'stored/raw':>10} {'mean B':>7} {'enc us':>7} {'dec us':>7}  (CPU)")
    for name, (enc, dec) in candidates().items():
        best_enc = best_dec = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            stored = [enc(b) for b in sample]
            best_enc = min(best_enc, time.process_time() - t0)
            t0 = time.process_time()
            back = [dec(z) for z in stored]
            best_dec = min(best_dec, time.process_time() - t0)
        assert back == sample, name
        size = sum(map(len, stored))
        print(f"{name:36} {size / raw:10.3f} {size / len(sample):7.0f} "
              f"{best_enc / len(sample) * 1e6:7.1f} {best_dec / len(sample) * 1e6:7.1f}")


if __name__ == "__main__":
    main()
