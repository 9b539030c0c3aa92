/**
 * The manifests under k8s/: the kustomization installs files that exist, the examples are valid
 * MetaTrainings, and the operator's RBAC grants every verb the operator uses, and no more.
 */
import { describe, expect, test } from "vitest";
import * as yaml from "js-yaml";
import { validateMetaTrainingSpec } from "../../cluster/metatraining.ts";

const root = new URL("../../k8s/", import.meta.url);

// deno-lint-ignore no-explicit-any
async function loadAll(path: string): Promise<any[]> {
  return yaml.loadAll(await Deno.readTextFile(new URL(path, root))).filter(Boolean);
}

describe("k8s manifests", () => {
  test("every resource in the kustomization exists and parses", async () => {
    const [kustomization] = await loadAll("kustomization.yaml");
    for (const path of kustomization.resources as string[]) {
      const docs = await loadAll(path);
      expect(docs.length, path).toBeGreaterThan(0);
      for (const d of docs) expect(d.kind, path).toBeTruthy();
    }
  });

  test("the example MetaTrainings are valid specs", async () => {
    for (const file of ["metatraining-cpu.yaml", "metatraining-gpu.yaml"]) {
      const [mt] = await loadAll(`examples/${file}`);
      const result = validateMetaTrainingSpec(mt.spec);
      expect(result.ok ? [] : result.issues, file).toEqual([]);
    }
  });

  test("the operator's ClusterRole grants exactly what reconcile and the informers use", async () => {
    const docs = await loadAll("operator/rbac.yaml");
    const role = docs.find((d) => d.kind === "ClusterRole");
    const grants = new Set<string>();
    for (const rule of role.rules) {
      for (const g of rule.apiGroups) {
        for (const r of rule.resources) for (const v of rule.verbs) grants.add(`${g}/${r}:${v}`);
      }
    }
    const used = [
      "datarater.dev/metatrainings:get",
      "datarater.dev/metatrainings:list",
      "datarater.dev/metatrainings:watch",
      "datarater.dev/metatrainings/status:update",
      "batch/jobs:list",
      "batch/jobs:watch",
      "batch/jobs:get",
      "batch/jobs:create",
      "batch/jobs:patch",
      "batch/jobs:delete",
      "/configmaps:list",
      "/configmaps:watch",
      "/configmaps:create",
      "/configmaps:delete",
      "/pods:list",
      "/events:create",
    ];
    for (const u of used) expect(grants.has(u), u).toBe(true);
    // Nothing cluster-wide that could read Secrets or change workloads it does not own.
    expect([...grants].filter((g) => g.startsWith("/secrets"))).toEqual([]);
    const binding = docs.find((d) => d.kind === "ClusterRoleBinding");
    const [deployment] = await loadAll("operator/deployment.yaml");
    expect(binding.subjects[0].name).toBe(deployment.spec.template.spec.serviceAccountName);
  });
});
