/**
 * The CRD committed under k8s/ is the one generated from the zod schemas (no drift), and it is a
 * valid structural schema as the apiserver requires.
 */
import { describe, expect, test } from "vitest";
import * as yaml from "js-yaml";
import { buildMetaTrainingCrd, CRD_PATH, toStructuralSchema } from "../../cluster/crd.ts";
import { MetaTrainingStatusSchema } from "../../cluster/metatraining.ts";
import { InnerConfigSchema, RaterConfigSchema } from "../../lib/config.ts";
import { evaluateCel } from "../support/cel.ts";
import { celValidation, metaTrainingResource } from "../support/fake-apiserver.ts";
import { sampleMetaTraining } from "./helpers.ts";

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

  test("dModel % heads is a CEL rule on rater and inner that agrees with the zod refinement, defaults included", () => {
    const training = schema.properties.spec.properties.training.properties;
    for (
      const [name, zod] of [["rater", RaterConfigSchema], ["inner", InnerConfigSchema]] as const
    ) {
      const rules = training[name]["x-kubernetes-validations"];
      expect(rules, name).toHaveLength(1);
      expect(rules[0]).toMatchObject({
        message: "dModel must be divisible by heads",
        fieldPath: ".heads",
      });
      for (const dModel of [undefined, 4, 6, 8, 30, 64, 96, 1024]) {
        for (const heads of [undefined, 1, 3, 4, 5, 8, 32]) {
          const value = { ...(dModel && { dModel }), ...(heads && { heads }) };
          expect(evaluateCel(rules[0].rule, value), `${name} ${JSON.stringify(value)}`).toBe(
            zod.safeParse(value).success,
          );
        }
      }
    }
  });

  test("the fake API server enforces the CRD's rule, once, and relies on the CRD for it", () => {
    const validate = metaTrainingResource().validate!;
    const mt = sampleMetaTraining("x", { training: { rater: { dModel: 30 } } } as never);
    expect(validate(mt, undefined)).toEqual([{
      field: "spec.training.rater.heads",
      message: 'Invalid value: "object": dModel must be divisible by heads',
    }]);
    expect(
      validate(sampleMetaTraining("y", { training: { inner: { heads: 3 } } } as never), undefined),
    )
      .toEqual([{
        field: "spec.training.inner.heads",
        message: 'Invalid value: "object": dModel must be divisible by heads',
      }]);
    expect(
      validate(
        sampleMetaTraining("z", { training: { rater: { dModel: 32 } } } as never),
        undefined,
      ),
    )
      .toEqual([]);
    // Without the rule in the CRD nothing reports it: the fake does not keep a copy of its own.
    const spec = structuredClone(schema.properties.spec);
    delete spec.properties.training.properties.rater["x-kubernetes-validations"];
    expect(celValidation(spec, mt.spec, "spec").errors).toEqual([]);
  });
});
