"""Opening manifests and shards by URI: local paths, ``file://`` URIs and ``s3://bucket/key``.

S3 goes through boto3, imported only when an ``s3://`` URI is read, and configured from the same
environment as the TypeScript side (``lib/storage.ts``): ``S3_ENDPOINT`` (or
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``) selects a non-AWS server, which then gets path-style
addressing and checksums only when required (what MinIO, s3rver and most S3-compatible servers
need); credentials and region come from boto3's usual sources.
"""

import hashlib
import io
import os
import urllib.parse
import urllib.request

from .errors import MissingDependencyError

_default_s3_client = None


def parse_uri(uri):
    """``("file", path)`` or ``("s3", bucket, key)``; raises ``ValueError`` for other schemes."""
    if not isinstance(uri, str) or uri == "":
        raise ValueError(f"invalid storage URI {uri!r}: expected s3://bucket/key, file:///path or a path")
    if uri.startswith("s3://"):
        bucket, _, key = uri[5:].partition("/")
        if not bucket or not key:
            raise ValueError(f"invalid storage URI {uri!r}: expected s3://bucket/key")
        return ("s3", bucket, key)
    if uri.startswith("file://"):
        parsed = urllib.parse.urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"invalid storage URI {uri!r}: file URIs must name a local path")
        return ("file", urllib.request.url2pathname(parsed.path))
    scheme = urllib.parse.urlparse(uri).scheme
    if "://" in uri and scheme:
        raise ValueError(f"invalid storage URI {uri!r}: only s3:// and file:// are supported")
    return ("file", os.path.abspath(uri))


def _env(*names):
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def default_s3_client():
    """The boto3 S3 client used when none is passed (created on first use, from the environment)."""
    global _default_s3_client
    if _default_s3_client is None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as e:
            raise MissingDependencyError(
                "reading s3:// URIs needs boto3, which is not installed: `pip install boto3` "
                "(or pass an s3_client)"
            ) from e
        endpoint = _env("S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        region = _env("AWS_REGION", "AWS_DEFAULT_REGION") or "us-east-1"
        options = {}
        if endpoint:
            options["s3"] = {"addressing_style": "path"}
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        try:
            config = Config(**options)
        except TypeError:
            # botocore before 1.36 has no checksum settings, and sends no default checksums anyway.
            options.pop("request_checksum_calculation", None)
            options.pop("response_checksum_validation", None)
            config = Config(**options)
        _default_s3_client = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                                          config=config)
    return _default_s3_client


def _s3_error_code(error):
    response = getattr(error, "response", None) or {}
    return str((response.get("Error") or {}).get("Code", ""))


def open_object(uri, s3_client=None):
    """Opens an object for binary reading (close it when done). Missing: ``FileNotFoundError``."""
    location = parse_uri(uri)
    if location[0] == "file":
        try:
            return open(location[1], "rb")
        except IsADirectoryError as e:
            raise FileNotFoundError(f"not found: {uri}") from e
    client = s3_client or default_s3_client()
    try:
        return client.get_object(Bucket=location[1], Key=location[2])["Body"]
    except Exception as e:
        if _s3_error_code(e) in ("NoSuchKey", "NoSuchBucket", "404", "NotFound"):
            raise FileNotFoundError(f"not found: {uri}") from e
        raise


def stat_object(uri, s3_client=None):
    """``(size, etag)`` of an object. Missing: ``FileNotFoundError``.

    For local files the ETag is the weak tag ``lib/storage.ts`` gives them (size and modification
    time in milliseconds, in hex), so a manifest scored from a local file recognises it unchanged
    without hashing, as the TypeScript reader does.
    """
    location = parse_uri(uri)
    if location[0] == "file":
        st = os.stat(location[1])
        if not os.path.isfile(location[1]):
            raise FileNotFoundError(f"not found: {uri}")
        return st.st_size, f"{st.st_size:x}-{st.st_mtime_ns // 1_000_000:x}"
    client = s3_client or default_s3_client()
    try:
        head = client.head_object(Bucket=location[1], Key=location[2])
    except Exception as e:
        if _s3_error_code(e) in ("NoSuchKey", "NoSuchBucket", "404", "NotFound"):
            raise FileNotFoundError(f"not found: {uri}") from e
        raise
    etag = head.get("ETag")
    return head.get("ContentLength", 0), etag.strip('"') if etag else None


class HashingReader(io.RawIOBase):
    """A read-only raw stream over ``source`` (anything with ``read(n)``) that hashes what it reads.

    ``sha256``/``size`` cover every byte read so far: the stored bytes, before any decompression,
    which is what a manifest header's ``input.sha256`` is computed over.
    """

    def __init__(self, source, hash_bytes=True):
        super().__init__()
        self._source = source
        self._hash = hashlib.sha256() if hash_bytes else None
        self.size = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        filled = 0
        # Fill the request unless at the end, so a peek at the first bytes sees all of them even
        # when the source (an HTTP body) answers in small pieces.
        while filled < len(view):
            chunk = self._source.read(len(view) - filled)
            if not chunk:
                break
            view[filled:filled + len(chunk)] = chunk
            filled += len(chunk)
        if self._hash is not None:
            self._hash.update(view[:filled])
        self.size += filled
        return filled

    def hexdigest(self):
        return self._hash.hexdigest() if self._hash is not None else None

    def close(self):
        try:
            close = getattr(self._source, "close", None)
            if close:
                close()
        finally:
            super().close()


def open_buffered(uri, s3_client=None, hash_bytes=False):
    """``(buffered, hashing)``: a buffered binary stream of the object, and the raw reader under it."""
    raw = HashingReader(open_object(uri, s3_client), hash_bytes)
    return io.BufferedReader(raw, buffer_size=1 << 20), raw


def peek(buffered, n):
    """The first ``n`` bytes of a fresh buffered stream (fewer only if the object is shorter)."""
    return buffered.peek(n)[:n]
