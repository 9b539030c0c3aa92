/**
 * `deno run -A scripts/schemas.ts`: regenerates the manifest v1 and run summary JSON Schemas in
 * schemas/ from the zod schemas in lib/manifest.ts and lib/run-summary.ts (the code is the
 * source of truth; test/lib/manifest-formats.test.ts fails when the committed files drift).
 */
import { z } from "zod";
import { ManifestEntrySchema, ManifestHeaderSchema } from "../lib/manifest.ts";
import { RunSummarySchema } from "../lib/run-summary.ts";

/** The JSON Schemas generated from code, by file name under schemas/. */
export function generatedSchemas(): Record<string, unknown> {
  const gen = (schema: z.ZodType, id: string, title: string) => ({
    $id: id,
    title,
    ...z.toJSONSchema(schema, { io: "input", target: "draft-2020-12" }),
  });
  return {
    "manifest-v1.header.schema.json": gen(
      ManifestHeaderSchema,
      "https://datarater.dev/schemas/manifest-v1.header.schema.json",
      "DataRater manifest v1: header (line 1)",
    ),
    "manifest-v1.entry.schema.json": gen(
      ManifestEntrySchema,
      "https://datarater.dev/schemas/manifest-v1.entry.schema.json",
      "DataRater manifest v1: entry (lines 2..)",
    ),
    "run-summary.schema.json": gen(
      RunSummarySchema,
      "https://datarater.dev/schemas/run-summary.schema.json",
      "DataRater run summary (_summary.json beside the manifests)",
    ),
  };
}

if (import.meta.main) {
  const dir = new URL("../schemas/", import.meta.url);
  for (const [name, schema] of Object.entries(generatedSchemas())) {
    await Deno.writeTextFile(new URL(name, dir), JSON.stringify(schema, null, 2) + "\n");
  }
}
