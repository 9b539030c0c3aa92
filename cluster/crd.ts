/**
 * The MetaTraining CustomResourceDefinition, generated from the zod schemas in `metatraining.ts`
 * so that the YAML in `k8s/` and the TypeScript types cannot drift (a test regenerates and compares).
 *
 * Run `deno task crd` to rewrite `k8s/crd/metatrainings.datarater.dev.yaml`.
 *
 * @example
 * ```ts
 * const crd = buildMetaTrainingCrd();
 * crd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.training;
 * ```
 */
import { z } from "zod";
import * as yaml from "js-yaml";
import { InnerConfigSchema, RaterConfigSchema } from "../lib/config.ts";
import {
  GROUP,
  KIND,
  MetaTrainingSpecSchema,
  MetaTrainingStatusSchema,
  PLURAL,
  SHORT_NAMES,
  SINGULAR,
  VERSION,
} from "./metatraining.ts";

/** Where the generated CRD lives, relative to the repository root. */
export const CRD_PATH = "k8s/crd/metatrainings.datarater.dev.yaml";

// deno-lint-ignore no-explicit-any
type JsonSchema = Record<string, any>;

/** A CEL validation rule of a schema node (`x-kubernetes-validations`). */
export interface CelRule {
  /** CEL, with `self` the node's value. */
  rule: string;
  message: string;
  /** Where the error points, relative to the node (Kubernetes 1.28+). */
  fieldPath?: string;
  reason?: "FieldValueInvalid";
}

/**
 * `self.<x> % self.<y> == 0`. A CEL rule that reads an absent field fails, and the CRD carries no
 * defaults (see {@link toStructuralSchema}), so a field left out reads as its zod default here, as
 * it will in the trainer.
 */
function divisibleRule(node: JsonSchema, x: string, y: string): CelRule {
  const read = (f: string) => {
    const fallback = node.properties?.[f]?.default;
    if (typeof fallback !== "number") throw new Error(`${f} has no numeric default`);
    return `(has(self.${f}) ? self.${f} : ${fallback})`;
  };
  return {
    rule: `${read(x)} % ${read(y)} == 0`,
    message: `${x} must be divisible by ${y}`,
    fieldPath: `.${y}`,
    reason: "FieldValueInvalid",
  };
}

/**
 * The zod refinements that OpenAPI cannot express, as CEL rules on the nodes of the schemas they
 * refine, so that the apiserver rejects such a spec at `kubectl apply` as the operator would.
 * test/cluster/crd.test.ts checks each rule against its refinement.
 */
const CEL_RULES = new Map<unknown, (node: JsonSchema) => CelRule[]>([
  [RaterConfigSchema, (node) => [divisibleRule(node, "dModel", "heads")]],
  [InnerConfigSchema, (node) => [divisibleRule(node, "dModel", "heads")]],
]);

/** zod's OpenAPI output of `schema`, with the {@link CEL_RULES} of its sub-schemas attached. */
function openApiWithRules(schema: z.ZodType, io: "input" | "output"): JsonSchema {
  return z.toJSONSchema(schema, {
    io,
    target: "openapi-3.0",
    override: (ctx) => {
      const rules = CEL_RULES.get(ctx.zodSchema);
      if (rules) ctx.jsonSchema["x-kubernetes-validations"] = rules(ctx.jsonSchema as JsonSchema);
    },
  }) as JsonSchema;
}

/**
 * Turns zod's OpenAPI 3.0 output into a Kubernetes *structural* schema: every node typed, no
 * `additionalProperties: false` (the apiserver prunes unknown fields instead), int-or-string
 * quantities marked `x-kubernetes-int-or-string`, and defaults moved into descriptions.
 *
 * Defaults stay out of the CRD on purpose: the operator fills them with the same zod schema when it
 * writes the trainer's config, so the stored object is what the user wrote and the defaults are
 * those of the trainer version that runs it.
 */
export function toStructuralSchema(node: JsonSchema): JsonSchema {
  const out: JsonSchema = {};
  let description: string | undefined = node.description;
  if (node.default !== undefined && !(description ?? "").includes("Default:")) {
    const shown = typeof node.default === "object"
      ? JSON.stringify(node.default)
      : String(node.default);
    description = (description ? description.replace(/\.?$/, ". ") : "") + `Default: ${shown}.`;
  }
  if (description) out.description = description;

  if (Array.isArray(node.anyOf)) {
    const types = node.anyOf.map((b: JsonSchema) => b.type).sort();
    const intOrString = types.length === 2 &&
      (types[0] === "integer" || types[0] === "number") && types[1] === "string";
    if (!intOrString) {
      throw new Error(
        `cannot express anyOf [${
          types.join(", ")
        }] as a structural schema; use one type or int-or-string`,
      );
    }
    const stringBranch = node.anyOf.find((b: JsonSchema) => b.type === "string");
    out["x-kubernetes-int-or-string"] = true;
    out.anyOf = [{ type: "integer" }, { type: "string" }];
    if (stringBranch?.pattern) out.pattern = stringBranch.pattern;
    return out;
  }

  if (typeof node.type !== "string") {
    throw new Error(`schema node without a type: ${JSON.stringify(node).slice(0, 200)}`);
  }
  out.type = node.type;
  for (
    const key of ["format", "enum", "pattern", "minLength", "maxLength", "minItems", "maxItems"]
  ) {
    if (node[key] !== undefined) out[key] = node[key];
  }
  // zod bounds every integer to the safe range; that says nothing to a reader of the CRD.
  if (node.minimum !== undefined && node.minimum > Number.MIN_SAFE_INTEGER) {
    out.minimum = node.minimum;
    if (node.exclusiveMinimum === true) out.exclusiveMinimum = true;
  }
  if (node.maximum !== undefined && node.maximum < Number.MAX_SAFE_INTEGER) {
    out.maximum = node.maximum;
    if (node.exclusiveMaximum === true) out.exclusiveMaximum = true;
  }
  if (node.type === "object") {
    if (node.properties) {
      out.properties = Object.fromEntries(
        Object.entries(node.properties as Record<string, JsonSchema>).map((
          [k, v],
        ) => [k, toStructuralSchema(v)]),
      );
      if (node.required?.length) out.required = [...node.required];
    } else if (node.additionalProperties && typeof node.additionalProperties === "object") {
      out.additionalProperties = toStructuralSchema(node.additionalProperties);
    }
  }
  if (node.type === "array") out.items = toStructuralSchema(node.items);
  if (node["x-kubernetes-validations"]) {
    out["x-kubernetes-validations"] = structuredClone(node["x-kubernetes-validations"]);
  }
  return out;
}

/** The CRD object (apiextensions.k8s.io/v1). */
export function buildMetaTrainingCrd() {
  const spec = toStructuralSchema(openApiWithRules(MetaTrainingSpecSchema, "input"));
  spec.description = "What to meta-train and where to run it.";
  const status = toStructuralSchema(openApiWithRules(MetaTrainingStatusSchema, "output"));
  status.description = "Observed state, written by the operator.";
  // Conditions are a map keyed by type (metav1.Condition convention).
  status.properties.conditions["x-kubernetes-list-type"] = "map";
  status.properties.conditions["x-kubernetes-list-map-keys"] = ["type"];
  status.properties.conditions.items.required = [
    "type",
    "status",
    "lastTransitionTime",
    "reason",
    "message",
  ];
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: {
      name: `${PLURAL}.${GROUP}`,
      labels: { "app.kubernetes.io/name": "datarater", "app.kubernetes.io/component": "operator" },
    },
    spec: {
      group: GROUP,
      scope: "Namespaced",
      names: {
        kind: KIND,
        listKind: `${KIND}List`,
        plural: PLURAL,
        singular: SINGULAR,
        shortNames: SHORT_NAMES,
        categories: ["datarater"],
      },
      versions: [{
        name: VERSION,
        served: true,
        storage: true,
        subresources: { status: {} },
        additionalPrinterColumns: [
          { name: "Phase", type: "string", jsonPath: ".status.phase" },
          { name: "Steps", type: "string", jsonPath: ".status.progress.steps" },
          { name: "Meta-Loss", type: "number", jsonPath: ".status.progress.metaLoss" },
          { name: "Job", type: "string", jsonPath: ".status.jobName", priority: 1 },
          { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
        ],
        schema: {
          openAPIV3Schema: {
            type: "object",
            description:
              "MetaTraining meta-learns a DataRater (a model that scores training records) in a batch Job and exports it as ONNX to the output URI.",
            required: ["spec"],
            properties: {
              apiVersion: { type: "string" },
              kind: { type: "string" },
              metadata: { type: "object" },
              spec,
              status,
            },
          },
        },
      }],
    },
  };
}

/** The CRD as the YAML committed under `k8s/`. */
export function renderMetaTrainingCrdYaml(): string {
  return "# Generated by `deno task crd` from cluster/metatraining.ts and lib/config.ts. Do not edit.\n" +
    yaml.dump(buildMetaTrainingCrd(), { lineWidth: 100, noRefs: true });
}

if (import.meta.main) {
  const target = new URL(`../${CRD_PATH}`, import.meta.url);
  await Deno.mkdir(new URL(".", target), { recursive: true });
  await Deno.writeTextFile(target, renderMetaTrainingCrdYaml());
  console.log(`wrote ${CRD_PATH}`);
}
