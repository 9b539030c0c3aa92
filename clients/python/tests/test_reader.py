"""The Python reader against manifests that the project's scoring function wrote.

test/clients/python-reader.test.ts scores real shards into manifests, reads them back with the
TypeScript reader (lib/manifest.ts), and runs this file with DATARATER_READER_CASES naming a JSON
file of the shards, manifests and what the TypeScript reader found; every case here must agree.
Without that variable only the self-contained tests run:

    PYTHONPATH=clients/python python3 -m unittest discover -s clients/python/tests -v
"""

import importlib.util
import json
import os
import tempfile
import unittest

from datarater_manifest import (
    ManifestEntry,
    ManifestError,
    ManifestMismatchError,
    MissingDependencyError,
    ShardVerificationError,
    UnsupportedManifestError,
    iter_entries,
    iter_kept,
    read_header,
    verify_shard,
)
from datarater_manifest.shards import record_id

CASES_PATH = os.environ.get("DATARATER_READER_CASES")
CASES = json.load(open(CASES_PATH, encoding="utf-8")) if CASES_PATH else None
HAS_PYARROW = importlib.util.find_spec("pyarrow") is not None
HAS_BOTO3 = importlib.util.find_spec("boto3") is not None
NO_CASES = "DATARATER_READER_CASES is unset: run through test/clients/python-reader.test.ts"


def as_javascript_sees_it(value):
    # Python's json keeps integers exact where JavaScript rounds them to doubles: the one way a
    # record read here may differ from the same record read by lib/manifest.ts.
    if isinstance(value, dict):
        return {k: as_javascript_sees_it(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_javascript_sees_it(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return float(value)
    return value


class NumericIds(unittest.TestCase):
    def test_numeric_ids_read_as_javascript_string_of_number(self):
        # The scorer is JavaScript: a JSON number id is a double, and its id is String(number).
        cases = {
            7: "7", 1.5: "1.5", -0.0: "0", 1e21: "1e+21", 1e20: "100000000000000000000",
            12345678901234567890: "12345678901234567000", 1e-6: "0.000001", 1e-7: "1e-7",
            123.456: "123.456", 1.2e-10: "1.2e-10", -42.5: "-42.5", 5e-324: "5e-324",
        }
        for value, expected in cases.items():
            self.assertEqual(record_id(value), expected, value)

    def test_parquet_integer_ids_are_exact_and_invalid_ids_are_none(self):
        self.assertEqual(record_id(12345678901234567890, exact_ints=True), "12345678901234567890")
        for invalid in (True, None, "", [1], {"a": 1}, float("nan"), float("inf"), 10**400):
            self.assertIsNone(record_id(invalid), invalid)


@unittest.skipIf(CASES is None, NO_CASES)
class AgreesWithTypeScript(unittest.TestCase):
    def assert_agrees(self, case):
        header = read_header(case["manifest"])
        self.assertEqual(header.version, 1)
        self.assertEqual(header.input_sha256, case["inputSha256"])
        self.assertEqual((header.records, header.kept), (case["records"], case["kept"]))
        entries = list(iter_entries(case["manifest"]))
        self.assertEqual(
            [[e.id, e.line, e.score, e.keep] for e in entries], case["entries"])
        self.assertEqual(
            [[[list(s) for s in e.spans], e.truncated] for e in entries], case["entrySpans"])
        pairs = list(iter_kept(case["shard"], case["manifest"], with_entries=True))
        self.assertEqual([entry.id for _, entry in pairs], case["keptIds"])
        self.assertEqual([as_javascript_sees_it(record) for record, _ in pairs],
                         as_javascript_sees_it(case["keptRecords"]))
        self.assertEqual([entry.score for _, entry in pairs], case["keptScores"])
        self.assertTrue(all(isinstance(e, ManifestEntry) and e.keep for _, e in pairs))
        # Without a shard URI the header's input is joined, and without verification too.
        records = [record for record, _ in pairs]
        self.assertEqual(list(iter_kept(None, case["manifest"])), records)
        self.assertEqual(list(iter_kept(case["shard"], case["manifest"], verify=False)), records)
        self.assertEqual(verify_shard(case["shard"], header).method, case["verifyMethod"])
        hashed = verify_shard(case["shard"], case["manifest"], trust_etag=False)
        self.assertEqual((hashed.method, hashed.sha256), ("sha256", case["inputSha256"]))

    def test_jsonl_with_custom_fields_skipped_lines_and_numeric_ids(self):
        self.assertEqual(read_header(CASES["jsonl"]["manifest"]).id_field, "doc_id")
        self.assert_agrees(CASES["jsonl"])

    def test_gzip_jsonl(self):
        self.assert_agrees(CASES["gzip"])

    @unittest.skipUnless(HAS_PYARROW, "pyarrow is not installed: Parquet shards need it")
    def test_parquet_with_pyarrow(self):
        self.assert_agrees(CASES["parquet"])

    @unittest.skipIf(HAS_PYARROW, "pyarrow is installed: test_parquet_with_pyarrow reads Parquet")
    def test_parquet_without_pyarrow_says_so(self):
        case = CASES["parquet"]
        with self.assertRaises(MissingDependencyError) as caught:
            next(iter_kept(case["shard"], case["manifest"]))
        self.assertIn("pyarrow", str(caught.exception))
        self.assertIn(case["shard"], str(caught.exception))
        # The manifest itself needs nothing: ids and decisions agree without pyarrow.
        self.assertEqual([e.id for e in iter_entries(case["manifest"]) if e.keep], case["keptIds"])

    @unittest.skipUnless(HAS_BOTO3, "boto3 is not installed: s3:// URIs need it")
    def test_s3_through_boto3_and_s3_endpoint(self):
        case = CASES["s3"]
        self.assertTrue(case["shard"].startswith("s3://"))
        self.assertEqual(os.environ.get("S3_ENDPOINT"), case["endpoint"])
        self.assert_agrees(case)

    @unittest.skipIf(HAS_BOTO3, "boto3 is installed: test_s3_through_boto3_and_s3_endpoint reads s3://")
    def test_s3_without_boto3_says_so(self):
        with self.assertRaises(MissingDependencyError) as caught:
            read_header(CASES["s3"]["manifest"])
        self.assertIn("boto3", str(caught.exception))

    @unittest.skipUnless(HAS_BOTO3 and HAS_PYARROW,
                         "boto3 and pyarrow are needed for Parquet shards on S3")
    def test_s3_parquet_is_spooled_for_pyarrow(self):
        case = CASES["s3Parquet"]
        self.assertTrue(case["shard"].startswith("s3://"))
        spooled = set(os.listdir(tempfile.gettempdir()))
        self.assert_agrees(case)
        leftovers = set(os.listdir(tempfile.gettempdir())) - spooled
        self.assertEqual([f for f in leftovers if f.startswith("datarater-shard-")], [])

    def test_tampered_shard_fails_the_hash_naming_both_uris_and_hashes(self):
        case = CASES["tampered"]
        with self.assertRaises(ShardVerificationError) as caught:
            verify_shard(case["shard"], case["manifest"])
        error = caught.exception
        for part in (case["shard"], case["manifest"], case["actualSha256"], case["expectedSha256"]):
            self.assertIn(part, str(error))
        self.assertEqual((error.expected_sha256, error.actual_sha256),
                         (case["expectedSha256"], case["actualSha256"]))
        # Streaming: the records are yielded as they are read, the hash fails at the end.
        yielded = []
        with self.assertRaises(ShardVerificationError) as caught:
            for _, entry in iter_kept(case["shard"], case["manifest"], with_entries=True):
                yielded.append(entry.id)
        self.assertEqual(yielded, case["keptIds"])
        self.assertIn(case["actualSha256"], str(caught.exception))
        # Not verifying reads the (same-ids) tampered shard through.
        self.assertEqual(
            [e.id for _, e in iter_kept(case["shard"], case["manifest"], verify=False,
                                        with_entries=True)],
            case["keptIds"])

    def test_manifest_of_another_shard_fails_before_any_record(self):
        case = CASES["otherShard"]
        records = iter_kept(case["shard"], case["manifest"])
        with self.assertRaises(ShardVerificationError) as caught:
            next(records)
        self.assertIn(case["shard"], str(caught.exception))
        self.assertIn(case["manifest"], str(caught.exception))
        self.assertEqual(caught.exception.actual_size, case["actualSize"])

    def test_truncated_shard(self):
        case = CASES["truncated"]
        with self.assertRaises(ShardVerificationError) as caught:
            next(iter_kept(case["shard"], case["manifest"]))
        self.assertEqual((caught.exception.actual_size, caught.exception.expected_size),
                         (case["actualSize"], case["expectedSize"]))
        yielded = []
        with self.assertRaises(ManifestMismatchError) as caught:
            for _, entry in iter_kept(case["shard"], case["manifest"], verify=False,
                                      with_entries=True):
                yielded.append(entry.id)
        self.assertIn(f"the shard ends before line {case['endsBeforeLine']}", str(caught.exception))
        self.assertEqual(yielded, case["keptIdsBeforeEnd"])

    def test_truncated_gzip_shard(self):
        case = CASES["truncatedGzip"]
        with self.assertRaises(ShardVerificationError):
            next(iter_kept(case["shard"], case["manifest"]))
        with self.assertRaises(ManifestMismatchError) as caught:
            list(iter_kept(case["shard"], case["manifest"], verify=False))
        self.assertIn("truncated or corrupt gzip", str(caught.exception))
        self.assertIn(case["shard"], str(caught.exception))

    def test_manifest_with_a_missing_line(self):
        case = CASES["missingLine"]
        with self.assertRaises(ManifestError) as caught:
            list(iter_entries(case["manifest"]))
        self.assertIn(f"{case['entries']} entries but the header counts {case['records']}",
                      str(caught.exception))
        with self.assertRaises(ManifestError) as caught:
            list(iter_kept(case["shard"], case["manifest"]))
        self.assertIn(f"{case['entries']} entries but the header counts {case['records']}",
                      str(caught.exception))

    def test_manifest_with_a_wrong_id(self):
        case = CASES["wrongId"]
        with self.assertRaises(ManifestMismatchError) as caught:
            list(iter_kept(case["shard"], case["manifest"]))
        message = str(caught.exception)
        self.assertIn(f"id mismatch at line {case['line']}", message)
        self.assertIn(json.dumps(case["manifestId"]), message)
        self.assertIn(json.dumps(case["shardId"]), message)

    def test_unknown_manifest_version(self):
        case = CASES["unknownVersion"]
        for read in (read_header, lambda uri: list(iter_entries(uri)),
                     lambda uri: list(iter_kept(case["shard"], uri))):
            with self.assertRaises(UnsupportedManifestError) as caught:
                read(case["manifest"])
            self.assertIn("version 2", str(caught.exception))
            self.assertIn("upgrade", str(caught.exception))

    def test_entry_spans_and_truncation_are_read_and_checked(self):
        manifest = CASES["jsonl"]["manifest"]
        path = manifest[len("file://"):] if manifest.startswith("file://") else manifest
        with open(path, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
        entries = list(iter_entries(CASES["jsonl"]["manifest"]))
        self.assertTrue(all(e.spans and e.spans[0][0] == 0 for e in entries))
        self.assertTrue(all(
            a[1] == b[0] for e in entries for a, b in zip(e.spans, e.spans[1:])))
        with tempfile.TemporaryDirectory() as tmp:
            def read_with(entry):
                path = os.path.join(tmp, "m.manifest.jsonl")
                with open(path, "w", encoding="utf-8") as f:
                    for line in [lines[0], entry] + lines[2:]:
                        f.write(json.dumps(line) + "\n")
                return list(iter_entries(path))

            cut = dict(lines[1], truncated=True)
            self.assertTrue(read_with(cut)[0].truncated)
            self.assertFalse(read_with(lines[1])[0].truncated)
            for bad in ([], [[0, 5]], [[5, 0, 1.0]], [[0, 5, "x"]], "spans"):
                with self.assertRaises(ManifestError) as caught:
                    read_with(dict(lines[1], spans=bad))
                self.assertIn("spans: expected", str(caught.exception))
            with self.assertRaises(ManifestError):
                read_with(dict(lines[1], truncated=False))

    def test_a_shard_read_as_a_manifest_says_what_it_is(self):
        with self.assertRaises(UnsupportedManifestError) as caught:
            read_header(CASES["parquet"]["shard"])
        self.assertIn("is a Parquet file", str(caught.exception))
        with self.assertRaises(UnsupportedManifestError) as caught:
            read_header(CASES["gzip"]["shard"])
        self.assertIn("gzip-compressed", str(caught.exception))
        with self.assertRaises(ManifestError) as caught:
            read_header(CASES["jsonl"]["shard"])
        self.assertIn("is not a manifest", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
