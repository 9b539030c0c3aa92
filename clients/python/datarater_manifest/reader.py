"""The public reading API: headers, entries, the kept records of a shard, shard verification.

Formats are dispatched in one place, :func:`_open_manifest`: by the first bytes (a Parquet manifest
would start with ``PAR1``), then by the header's ``version`` for JSON Lines manifests
(``_JSONL_VERSIONS``). A new format or version is one more module like ``manifest_v1.py``
(``parse_header`` + ``iter_entries``) registered there; :func:`iter_kept` only sees
:class:`~datarater_manifest.schema.ManifestEntry` values.
"""

import json
from dataclasses import dataclass

from . import manifest_v1
from .errors import (
    ManifestError,
    ManifestMismatchError,
    ShardVerificationError,
    UnsupportedManifestError,
)
from .schema import ManifestHeader
from .shards import GZIP_MAGIC, PARQUET_MAGIC, Shard, ShardReadError, parse_json_line, record_id
from .storage import open_buffered, peek, stat_object

MANIFEST_KIND = "datarater.manifest"
_JSONL_VERSIONS = {manifest_v1.VERSION: manifest_v1}


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _manifest_lines(uri, buffered):
    """``(line, parsed_json)`` for each non-empty line of a JSON Lines manifest."""
    for line, raw in enumerate(buffered, start=1):
        raw = raw.rstrip(b"\n").removesuffix(b"\r")
        if not raw:
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestError(f"{uri} line {line} is not valid UTF-8", uri) from None
        try:
            yield line, json.loads(text, parse_constant=_reject_constant)
        except ValueError as e:
            raise ManifestError(f"{uri} line {line}: not valid JSON ({e})", uri) from None


def _open_manifest(uri, s3_client):
    """``(header, entries, close)``: the parsed header and a generator of the entries."""
    buffered, _ = open_buffered(uri, s3_client)
    try:
        head = peek(buffered, 4)
        if head == PARQUET_MAGIC:
            raise UnsupportedManifestError(
                f"{uri} is a Parquet file: this reader reads JSON Lines manifests (version "
                f"{', '.join(map(str, sorted(_JSONL_VERSIONS)))}); is it the shard rather than "
                "its manifest, or a newer manifest format (upgrade datarater_manifest)?",
                uri,
            )
        if head[:2] == GZIP_MAGIC:
            raise UnsupportedManifestError(
                f"{uri} is gzip-compressed: manifests are plain JSON Lines; is it the shard rather "
                "than its manifest?",
                uri,
            )
        lines = _manifest_lines(uri, buffered)
        first = next(lines, None)
        if first is None:
            raise ManifestError(f"{uri} is empty: expected a manifest header", uri)
        raw = first[1]
        if not isinstance(raw, dict) or raw.get("kind") != MANIFEST_KIND:
            kind = raw.get("kind") if isinstance(raw, dict) else None
            raise ManifestError(
                f"{uri} is not a manifest: its first line's kind is {kind!r}, expected "
                f"{MANIFEST_KIND!r}",
                uri,
            )
        version = raw.get("version")
        module = _JSONL_VERSIONS.get(version) if isinstance(version, int) else None
        if module is None:
            raise UnsupportedManifestError(
                f"{uri} is manifest version {version!r}, which this reader does not read (it "
                f"reads version {', '.join(map(str, sorted(_JSONL_VERSIONS)))}): upgrade "
                "datarater_manifest",
                uri,
            )
        header = module.parse_header(raw, uri)
    except BaseException:
        buffered.close()
        raise

    def entries():
        try:
            yield from module.iter_entries(header, lines)
        finally:
            buffered.close()

    return header, entries()


def read_header(uri, s3_client=None):
    """The header of the manifest at ``uri`` (only its first line is read).

    >>> header = read_header("s3://bucket/manifests/part-00000.manifest.jsonl")  # doctest: +SKIP
    >>> header.kept, header.records, header.raw["policy"]  # doctest: +SKIP
    """
    header, entries = _open_manifest(uri, s3_client)
    entries.close()
    return header


def iter_entries(uri, s3_client=None):
    """Every :class:`ManifestEntry` of a manifest, in input order (streaming).

    Each entry is checked as it is read; a manifest with a line missing or added raises
    :class:`ManifestError` at the end, when the count differs from the header's.
    """
    _, entries = _open_manifest(uri, s3_client)
    yield from entries


@dataclass(frozen=True)
class VerifyResult:
    """How a shard was found to be the manifest's: ``method`` ``"etag"`` (its ETag equals the
    header's) or ``"sha256"`` (its bytes were hashed: then ``sha256`` is set)."""

    shard_uri: str
    method: str
    size: int
    sha256: object = None


def _verification_error(header, shard_uri, sha256, size):
    return ShardVerificationError(
        f"shard {shard_uri} is not the one manifest {header.uri} was written for: "
        f"sha256 {sha256} ({size} bytes) differs from the header's {header.input_sha256} "
        f"({header.input_size} bytes)",
        header.uri,
        shard_uri,
        header.input_sha256,
        sha256,
        header.input_size,
        size,
    )


def _hash_object(uri, s3_client):
    buffered, raw = open_buffered(uri, s3_client, hash_bytes=True)
    try:
        while buffered.read(1 << 20):
            pass
        return raw.hexdigest(), raw.size
    finally:
        buffered.close()


def verify_shard(shard_uri, header, trust_etag=True, s3_client=None):
    """Checks that ``shard_uri`` holds the bytes ``header`` (a :class:`ManifestHeader`, or a
    manifest URI) was written for; returns a :class:`VerifyResult` or raises
    :class:`ShardVerificationError` naming both URIs and both hashes.

    As the TypeScript reader does: an ETag equal to the header's is trusted (cheap; for local files
    a weak tag of size and modification time), otherwise the shard's stored bytes are hashed.
    """
    if not isinstance(header, ManifestHeader):
        header = read_header(header, s3_client)
    size, etag = stat_object(shard_uri, s3_client)
    if trust_etag and etag is not None and etag == header.input_etag and size == header.input_size:
        return VerifyResult(shard_uri, "etag", size)
    sha256, size = _hash_object(shard_uri, s3_client)
    if sha256 != header.input_sha256 or size != header.input_size:
        raise _verification_error(header, shard_uri, sha256, size)
    return VerifyResult(shard_uri, "sha256", size, sha256)


def iter_kept(shard_uri, manifest_uri, verify=True, with_entries=False, trust_etag=True,
              s3_client=None):
    """The kept records of a shard, in input order: each the record's parsed JSON object (for a
    Parquet shard, the row as a dict), or ``(record, entry)`` with ``with_entries``.

    Streams shard and manifest together, checking that each entry's id is the id at its line
    (:class:`ManifestMismatchError` otherwise). ``shard_uri`` None means the header's input URI.
    With ``verify`` (the default) the shard must be the manifest's: a shard of another size raises
    :class:`ShardVerificationError` before any record is yielded; otherwise, unless its ETag equals
    the header's, its bytes are hashed as they stream and a difference raises at the end, after
    the records read so far were yielded (as the TypeScript reader does; call
    :func:`verify_shard` first to check before reading).
    """
    header, entries = _open_manifest(manifest_uri, s3_client)
    try:
        shard_uri = shard_uri or header.input_uri
        hashing = False
        if verify:
            size, etag = stat_object(shard_uri, s3_client)
            if size != header.input_size:
                sha256, size = _hash_object(shard_uri, s3_client)
                raise _verification_error(header, shard_uri, sha256, size)
            hashing = not (trust_etag and etag is not None and etag == header.input_etag)
        with Shard(shard_uri, s3_client, hash_bytes=hashing) as shard:
            yield from _join(header, entries, shard, with_entries)
            if hashing:
                sha256, size = shard.finish()
                if sha256 != header.input_sha256 or size != header.input_size:
                    raise _verification_error(header, shard_uri, sha256, size)
    finally:
        entries.close()


def _join(header, entries, shard, with_entries):
    def mismatch(why):
        return ManifestMismatchError(
            f"manifest {header.uri} does not match shard {shard.uri}: {why}", header.uri, shard.uri
        )

    rows = shard.rows()
    try:
        for entry in entries:
            # Lines before an entry's have no entry: the scorer skipped them (invalid, duplicate).
            for line, item in rows:
                if line == entry.line:
                    break
            else:
                raise mismatch(f"the shard ends before line {entry.line} (truncated?)")
            if isinstance(item, dict):
                record = item
            else:
                try:
                    record = parse_json_line(item)
                except ValueError as e:
                    raise mismatch(f"line {entry.line} is not valid JSON ({e})") from None
            shard_id = (record_id(record.get(header.id_field), shard.exact_ints)
                        if isinstance(record, dict) else None)
            if shard_id != entry.id:
                raise mismatch(
                    f"id mismatch at line {entry.line}: the manifest has id {json.dumps(entry.id)}, "
                    f"the shard {json.dumps(shard_id) if shard_id is not None else 'no valid id'}"
                )
            if entry.keep:
                yield (record, entry) if with_entries else record
    except ShardReadError as e:
        raise mismatch(str(e)) from e
    finally:
        rows.close()
