"""The reader's errors: one base class, and a subclass per thing a caller may want to catch."""


class ManifestError(Exception):
    """A manifest is malformed, unreadable by this reader, or does not match its shard.

    ``uri`` is the manifest's URI.
    """

    def __init__(self, message, uri):
        super().__init__(message)
        self.uri = uri


class UnsupportedManifestError(ManifestError):
    """The manifest is of a kind, format or version this reader does not read (upgrade it)."""


class ManifestMismatchError(ManifestError):
    """Manifest and shard do not join: an id differs at a line, or the shard ends too early."""

    def __init__(self, message, uri, shard_uri):
        super().__init__(message, uri)
        self.shard_uri = shard_uri


class ShardVerificationError(ManifestMismatchError):
    """The shard's bytes are not the ones the manifest was written for (sha256 or size differ).

    ``expected_sha256``/``expected_size`` come from the manifest's header, ``actual_sha256``/
    ``actual_size`` from the shard as read.
    """

    def __init__(self, message, uri, shard_uri, expected_sha256, actual_sha256, expected_size,
                 actual_size):
        super().__init__(message, uri, shard_uri)
        self.expected_sha256 = expected_sha256
        self.actual_sha256 = actual_sha256
        self.expected_size = expected_size
        self.actual_size = actual_size


class MissingDependencyError(ImportError):
    """An optional package is needed for this URI or shard (boto3 for s3://, pyarrow for Parquet)."""
