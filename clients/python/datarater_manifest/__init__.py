"""Read DataRater filter manifests from Python, and join them with their shards.

Standard library only; ``s3://`` URIs need boto3, Parquet shards need pyarrow (both imported only
when used). See ``clients/python/README.md``.

>>> from datarater_manifest import iter_kept  # doctest: +SKIP
>>> for record in iter_kept("shards/part-0.jsonl.gz", "manifests/part-0.manifest.jsonl"):
...     train_on(record["text"])  # doctest: +SKIP
"""

from .errors import (
    ManifestError,
    ManifestMismatchError,
    MissingDependencyError,
    ShardVerificationError,
    UnsupportedManifestError,
)
from .reader import MANIFEST_KIND, VerifyResult, iter_entries, iter_kept, read_header, verify_shard
from .schema import ManifestEntry, ManifestHeader

__all__ = [
    "MANIFEST_KIND",
    "ManifestEntry",
    "ManifestError",
    "ManifestHeader",
    "ManifestMismatchError",
    "MissingDependencyError",
    "ShardVerificationError",
    "UnsupportedManifestError",
    "VerifyResult",
    "iter_entries",
    "iter_kept",
    "read_header",
    "verify_shard",
]
