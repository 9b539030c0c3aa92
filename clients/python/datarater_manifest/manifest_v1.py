"""Manifest v1 (JSON Lines), as ``lib/manifest.ts`` writes it.

Line 1 is the header: ``kind`` ``"datarater.manifest"``, ``version`` 1, ``model`` (uri, sha256,
format, maxLength), ``input`` (uri, etag, sha256 of the stored bytes, size), ``fields`` (the id and
text field names), ``onInvalid``, ``policy``, ``threshold``, ``counts`` (records, kept, dropped,
skippedInvalid), ``invalid`` (the first skipped lines), ``scores`` (a summary) and ``scoring`` (how
records were windowed: window, stride, aggregation, cap). Then one entry
``{"id", "line", "score", "keep", "spans"}`` (and ``"truncated": true`` for a record cut at the cap)
per scored record, in input order; lines the scorer skipped as
invalid (bad JSON, missing fields, invalid UTF-8, duplicate ids) have no entry, which is why each
entry carries its shard line. Empty lines are ignored.
"""

import re

from .errors import ManifestError
from .schema import ManifestEntry, ManifestHeader

VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _get(raw, path, check, expected, uri):
    value = raw
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if not check(value):
        raise ManifestError(
            f"{uri} does not start with a manifest v1 header: {path}: expected {expected}, "
            f"got {value!r}",
            uri,
        )
    return value


def parse_header(raw, uri):
    """The reader's view of a v1 header (``raw`` is the parsed first line); checks what it uses."""
    def get(path, check, expected):
        return _get(raw, path, check, expected, uri)

    def count(path):
        return get(path, lambda v: _is_int(v) and v >= 0, "a count")

    return ManifestHeader(
        uri=uri,
        version=VERSION,
        format="jsonl",
        input_uri=get("input.uri", lambda v: isinstance(v, str), "a URI"),
        input_sha256=get("input.sha256", lambda v: isinstance(v, str) and bool(_SHA256.match(v)),
                         "a lowercase hex sha256"),
        input_size=count("input.size"),
        input_etag=get("input.etag", lambda v: v is None or isinstance(v, str), "a string or null"),
        id_field=get("fields.id", lambda v: isinstance(v, str) and v != "", "a field name"),
        text_field=get("fields.text", lambda v: isinstance(v, str) and v != "", "a field name"),
        records=count("counts.records"),
        kept=count("counts.kept"),
        raw=raw,
    )


def _entry_problem(value):
    if not isinstance(value, dict):
        return "expected a JSON object"
    if not isinstance(value.get("id"), str):
        return "id: expected a string"
    if not _is_int(value.get("line")) or value["line"] < 1:
        return "line: expected an integer >= 1"
    if not _is_number(value.get("score")):
        return "score: expected a number"
    if not isinstance(value.get("keep"), bool):
        return "keep: expected true or false"
    spans = value.get("spans")
    if spans is not None and not (
        isinstance(spans, list) and spans and all(
            isinstance(s, list) and len(s) == 3 and _is_int(s[0]) and _is_int(s[1])
            and 0 <= s[0] <= s[1] and _is_number(s[2]) for s in spans)):
        return "spans: expected a non-empty list of [start, end, score]"
    if value.get("truncated", True) is not True:
        return "truncated: expected true when present"
    return None


def iter_entries(header, lines):
    """The entries after the header, checked one by one, in input order, and counted at the end.

    ``lines`` yields ``(manifest_line, parsed_json)`` for the lines after the header.
    """
    uri = header.uri
    count = 0
    last_line = 0
    for line, value in lines:
        problem = _entry_problem(value)
        if problem:
            raise ManifestError(f"{uri} line {line}: not a manifest entry ({problem})", uri)
        if value["line"] <= last_line:
            raise ManifestError(
                f"{uri} line {line}: entries are out of input order "
                f"(shard line {value['line']} after {last_line})",
                uri,
            )
        last_line = value["line"]
        count += 1
        spans = value.get("spans")
        yield ManifestEntry(id=value["id"], line=value["line"], score=value["score"],
                            keep=value["keep"],
                            spans=None if spans is None else tuple(tuple(s) for s in spans),
                            truncated=value.get("truncated", False))
    if count != header.records:
        raise ManifestError(
            f"{uri} is truncated or corrupt: {count} entries but the header counts "
            f"{header.records} (a line is missing or was added)",
            uri,
        )
