/**
 * The CRD committed under k8s/ is the one generated from the zod schemas (no drift), and it is a
 * valid structural schema as the apiserver requires.
 */
import { describe, expect, test } from "vitest";
import * as yaml from "js-yaml";
import { buildMetaTrainingCrd, CRD_PATH, toStructuralSchema } from "../../cluster/crd.ts";
import { MetaTrainingStatusSchema } from "../../cluster/metatraining.ts";

// deno-lint-ignore no-explicit-any
type Node = Record<string, any>;

/** Every structural-schema rule the apiserver enforces that our generator could break. */
function structuralViolations(node: Node, path: string, out: string[]): string[] {
  if (!node["x-kubernetes-int-or-string"] && typeof node.type !== "string") {
    out.push(`${path}: no type`);
  }
  if (node.additionalProperties === false) out.push(`${path}: additionalProperties false`);
  if (node.properties && node.additionalProperties) {
    out.push(`${path}: properties and additionalProperties`);
  }
  for (
    const k of ["$schema", "$ref", "oneOf", "allOf", "not", "const", "default", "propertyNames"]
  ) {
    if (k in node) out.push(`${path}: ${k}`);
  }
  for (const [k, v] of Object.entries(node.properties ?? {})) {
    structuralViolations(v as Node, `${path}.${k}`, out);
  }
  if (node.items) structuralViolations(node.items, `${path}[]`, out);
  if (typeof node.additionalProperties === "object") {
    structuralViolations(node.additionalProperties, `${path}{}`, out);
  }
  return out;
}

describe("MetaTraining CRD", () => {
  const crd = buildMetaTrainingCrd();
  const version = crd.spec.versions[0];
  const schema = version.schema.openAPIV3Schema as Node;

  test("the committed k8s/ YAML equals the CRD generated from the schema (run `deno task crd` after a schema change)", async () => {
    const committed = yaml.load(
      await Deno.readTextFile(new URL(`../../${CRD_PATH}`, import.meta.url)),
    );
    expect(committed).toEqual(JSON.parse(JSON.stringify(crd)));
  });

  test("is a structural schema: every node typed, no defaults, no closed objects", () => {
    expect(structuralViolations(schema, "", [])).toEqual([]);
  });

  test("names, the status subresource and the printer columns follow the conventions", () => {
    expect(crd.metadata.name).toBe("metatrainings.datarater.dev");
    expect(crd.spec.scope).toBe("Namespaced");
    expect(crd.spec.names.shortNames).toContain("mt");
    expect(version.name).toBe("v1alpha1");
    expect(version.subresources).toEqual({ status: {} });
    expect(version.additionalPrinterColumns.map((c) => c.name)).toEqual([
      "Phase",
      "Steps",
      "Meta-Loss",
      "Job",
      "Age",
    ]);
  });

  test("the spec schema carries the training config and the scheduling fields with their constraints", () => {
    const spec = schema.properties.spec;
    expect(spec.required).toEqual(["training"]);
    const training = spec.properties.training;
    expect(training.required).toEqual(["data"]);
    expect(training.properties.meta.properties.population).toMatchObject({
      type: "integer",
      minimum: 1,
      maximum: 256,
    });
    expect(training.properties.backend.enum).toEqual(["wasm", "webgpu", "cpu"]);
    expect(spec.properties.resources.properties.memory).toMatchObject({
      "x-kubernetes-int-or-string": true,
      anyOf: [{ type: "integer" }, { type: "string" }],
    });
    expect(spec.properties.nodeSelector.additionalProperties).toEqual({ type: "string" });
    for (const field of ["image", "tolerations", "s3CredentialsSecret", "suspend", "queueName"]) {
      expect(spec.properties).toHaveProperty(field);
    }
  });

  test("every status field the operator writes is declared (a real apiserver prunes undeclared ones)", () => {
    const declared = Object.keys(schema.properties.status.properties).sort();
    expect(declared).toEqual(Object.keys(MetaTrainingStatusSchema.shape).sort());
    expect(schema.properties.status.properties.conditions["x-kubernetes-list-map-keys"]).toEqual([
      "type",
    ]);
  });

  test("the converter refuses unions it cannot express instead of emitting an invalid schema", () => {
    expect(() => toStructuralSchema({ anyOf: [{ type: "string" }, { type: "boolean" }] })).toThrow(
      /cannot express anyOf/,
    );
  });
});
