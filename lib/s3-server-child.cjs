// Runs s3rver (a real S3 wire-protocol server backed by a folder) for lib/s3-server.ts.
// It runs under Node, not Deno, because s3rver's ListObjectsV2 continuation tokens use the legacy
// DES cipher, which needs Node's --openssl-legacy-provider (Deno has no such switch).
"use strict";
const S3rver = require("s3rver");

const [directory, port, address, buckets] = process.argv.slice(2);
const server = new S3rver({
  port: Number(port),
  address,
  directory,
  silent: true,
  allowMismatchedSignatures: true,
  configureBuckets: (buckets ? buckets.split(",") : []).filter(Boolean).map((
    name,
  ) => ({ name })),
});
server.run().then(
  (info) =>
    process.stdout.write(
      JSON.stringify({ port: info.port, address: info.address }) + "\n",
    ),
  (err) => {
    process.stderr.write(`s3rver failed to start: ${err && err.message}\n`);
    process.exit(1);
  },
);
// Exit when the parent goes away (its end of stdin closes), so no orphan server outlives a test.
process.stdin.on("end", () => server.close(() => process.exit(0)));
process.stdin.resume();
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
