"""What a manifest reads as, whatever its format and version: a header and entries."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ManifestHeader:
    """A manifest's header: what the reader needs as attributes, the whole header as ``raw``.

    ``raw`` holds every field as written (model, policy, threshold, counts, score summary, the
    first skipped lines): see the README's manifest section.
    """

    uri: str
    """The manifest this header was read from."""
    version: int
    format: str
    """How the manifest is stored: ``"jsonl"`` (manifest v1)."""
    input_uri: str
    input_sha256: str
    """sha256 of the shard's stored bytes (the compressed bytes, for a gzip shard)."""
    input_size: int
    input_etag: object
    """The shard's ETag when it was scored (a string, or None where the store gave none)."""
    id_field: str
    text_field: str
    records: int
    """Entries in the manifest: one per scored record (skipped invalid lines have none)."""
    kept: int
    raw: dict = field(repr=False, compare=False)


@dataclass(frozen=True)
class ManifestEntry:
    """One scored record: its id, its 1-based line (Parquet: row) in the shard, score and decision."""

    id: str
    line: int
    score: float
    """The record's score: the header's ``scoring.aggregation`` of its span scores."""
    keep: bool
    spans: object = None
    """The window scores as a tuple of ``(start, end, score)``: byte offsets into the record's UTF-8
    text, end exclusive, covering its first ``min(len, scoring.cap)`` bytes; None in manifests
    written before windows."""
    truncated: bool = False
    """True when the record was longer than the header's ``scoring.cap`` bytes: its tail was not
    rated."""
