"""Reading record shards as ``lib/records.ts`` does: JSON Lines (gzip or not) or Parquet.

The format is told by the first bytes (gzip's magic, Parquet's ``PAR1``), not by the name. A JSON
Lines shard's line numbers count every ``\\n``-terminated line, blank ones included, and a trailing
``\\r`` is dropped: the numbering the manifest's entries refer to. Parquet rows are numbered from 1
across row groups, and need pyarrow.
"""

import gzip
import json
import math
import os
import shutil
import tempfile
import zlib

from .errors import MissingDependencyError
from .storage import open_buffered, parse_uri, peek

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"


def js_number_string(x):
    """``String(x)`` in JavaScript for a finite float: how the scorer turned numeric ids into ids.

    Python's ``repr`` and JavaScript both print the shortest digits that round-trip, so only the
    layout (where the point goes, when to switch to exponent form) needs translating: ECMAScript's
    Number::toString.
    """
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    text = repr(abs(x))
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    n = len(whole) + (int(exponent) if exponent else 0)  # value = 0.digits * 10**n
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    exp = ("+" if e >= 0 else "-") + str(abs(e))
    return sign + digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + exp


def record_id(value, exact_ints=False):
    """A record's id as the scorer wrote it into the manifest, or None if it is not a valid id.

    Strings are ids as they are; numbers become JavaScript's ``String(number)`` (JSON numbers are
    doubles there, so 12345678901234567890 is "12345678901234567000"). Parquet integer columns
    (``exact_ints``) are exact, as INT64 columns are bigints in the scorer.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int):
        if exact_ints:
            return str(value)
        try:
            value = float(value)
        except OverflowError:
            return None
    if isinstance(value, float) and math.isfinite(value):
        return js_number_string(value)
    return None


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_json_line(raw):
    """A JSON line as JavaScript's ``JSON.parse`` reads it (no NaN/Infinity), or ``ValueError``."""
    text = raw.decode("utf-8", errors="replace")
    return json.loads(text, parse_constant=_reject_constant)


class Shard:
    """An open shard: ``rows()`` yields ``(line, item)``, where item is a JSON line's bytes (parse
    them with :func:`parse_json_line`) or a Parquet row's dict; ``finish()`` reads whatever is left
    and returns ``(sha256, size)`` of the stored bytes (sha256 None unless hashing)."""

    def __init__(self, uri, s3_client=None, hash_bytes=False):
        self.uri = uri
        self._s3_client = s3_client
        self._buffered, self._raw = open_buffered(uri, s3_client, hash_bytes)
        self._spooled = None
        head = peek(self._buffered, 4)
        self.format = ("parquet" if head == PARQUET_MAGIC
                       else "jsonl.gz" if head[:2] == GZIP_MAGIC else "jsonl")
        self.exact_ints = self.format == "parquet"

    def rows(self):
        if self.format == "parquet":
            return self._parquet_rows()
        return self._jsonl_rows()

    def _jsonl_rows(self):
        stream = gzip.GzipFile(fileobj=self._buffered) if self.format == "jsonl.gz" else self._buffered
        try:
            for line, raw in enumerate(stream, start=1):
                yield line, raw.rstrip(b"\n").removesuffix(b"\r")
        except (EOFError, zlib.error, gzip.BadGzipFile) as e:
            raise ShardReadError(f"{self.uri} is truncated or corrupt gzip ({e})") from e

    def _parquet_rows(self):
        try:
            import pyarrow.parquet as pq
        except ImportError as e:
            raise MissingDependencyError(
                f"{self.uri} is a Parquet shard: reading it needs pyarrow, which is not installed "
                "(`pip install pyarrow`); JSON Lines shards need nothing beyond the standard library"
            ) from e
        location = parse_uri(self.uri)
        if location[0] == "file":
            path = location[1]
        else:
            # Parquet keeps its index at the end: spool the object (hashing it on the way) to a
            # temporary file that pyarrow can seek in.
            handle, path = tempfile.mkstemp(prefix="datarater-shard-", suffix=".parquet")
            self._spooled = path
            with os.fdopen(handle, "wb") as out:
                shutil.copyfileobj(self._buffered, out, 1 << 20)
        parquet = pq.ParquetFile(path)
        line = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                line += 1
                yield line, row

    def finish(self):
        while self._buffered.read(1 << 20):
            pass
        return self._raw.hexdigest(), self._raw.size

    def close(self):
        self._buffered.close()
        if self._spooled:
            os.unlink(self._spooled)
            self._spooled = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ShardReadError(Exception):
    """The shard cannot be read as records (corrupt or truncated compression)."""
