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

  test("the operator's ClusterRole and leader-election Role grant exactly the verbs it uses, and no more", async () => {
    const docs = await loadAll("operator/rbac.yaml");
    // deno-lint-ignore no-explicit-any
    const grantsOf = (role: any) => {
      const grants = new Set<string>();
      for (const rule of role.rules) {
        for (const g of rule.apiGroups) {
          for (const r of rule.resources) for (const v of rule.verbs) grants.add(`${g}/${r}:${v}`);
        }
      }
      return [...grants].sort();
    };
    // Every request the operator makes, by the call that makes it (cluster/client.ts,
    // cluster/controller.ts, cluster/leader.ts). The operator and reconcile tests' requests to the
    // fake API server were tallied against this list; batch/jobs:get is the one they do not reach
    // (reconcile reads the Job after a create that found it existing).
    const used = [
      "datarater.dev/metatrainings:get", // getMetaTraining({ fresh: true }) after a 409
      "datarater.dev/metatrainings:list", // informer
      "datarater.dev/metatrainings:watch", // informer
      "datarater.dev/metatrainings/status:update", // replaceMetaTrainingStatus (PUT /status)
      "batch/jobs:get", // getJob
      "batch/jobs:list", // informer
      "batch/jobs:watch", // informer
      "batch/jobs:create", // createJob
      "batch/jobs:patch", // setJobSuspended
      "batch/jobs:delete", // deleteJob (spec changed)
      "/configmaps:list", // informer
      "/configmaps:watch", // informer
      "/configmaps:create", // createConfigMap
      "/configmaps:delete", // deleteConfigMap (spec changed)
      "/pods:list", // listPods (a failed Job's termination message)
      "/events:create", // createEvent
      // Not a request: setting blockOwnerDeletion on a child's ownerReference needs it where the
      // OwnerReferencesPermissionEnforcement admission plugin is on.
      "datarater.dev/metatrainings/finalizers:update",
    ];
    const clusterRole = docs.find((d) => d.kind === "ClusterRole");
    expect(grantsOf(clusterRole)).toEqual([...used].sort());
    // Nothing cluster-wide that could read Secrets or change workloads it does not own.
    expect(grantsOf(clusterRole).filter((g) => g.startsWith("/secrets"))).toEqual([]);
    // The Lease, in the operator's own namespace only: read, take (create) and renew (update).
    const leaderRole = docs.find((d) => d.kind === "Role");
    expect(leaderRole.metadata.namespace).toBe("datarater-system");
    expect(grantsOf(leaderRole)).toEqual([
      "coordination.k8s.io/leases:create",
      "coordination.k8s.io/leases:get",
      "coordination.k8s.io/leases:update",
    ]);
    expect(docs.map((d) => d.kind).sort()).toEqual(
      ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"],
    );
    const binding = docs.find((d) => d.kind === "ClusterRoleBinding");
    const [deployment] = await loadAll("operator/deployment.yaml");
    expect(binding.subjects[0].name).toBe(deployment.spec.template.spec.serviceAccountName);
  });
});

describe("the scoring function's manifests", () => {
  test("the Deployment reads its roots from the ConfigMap and its token from a Secret, and binds HOST", async () => {
    const [kustomization] = await loadAll("kustomization.yaml");
    expect(kustomization.resources).toContain("function/config.yaml");
    const [config] = await loadAll("function/config.yaml");
    expect(config).toMatchObject({
      kind: "ConfigMap",
      metadata: { name: "datarater-function", namespace: "datarater-system" },
    });
    expect(config.data.DATARATER_ALLOWED_ROOTS).toMatch(/^s3:\/\/[^,\s]+\/(,s3:\/\/[^,\s]+\/)*$/);

    const deployment = (await loadAll("function/deployment.yaml")).find((d) =>
      d.kind === "Deployment"
    );
    expect(deployment.metadata.namespace).toBe(config.metadata.namespace);
    const [container] = deployment.spec.template.spec.containers;
    // deno-lint-ignore no-explicit-any
    const env = (name: string) => container.env.filter((e: any) => e.name === name);
    expect(env("DATARATER_ALLOWED_ROOTS")).toEqual([{
      name: "DATARATER_ALLOWED_ROOTS",
      valueFrom: {
        configMapKeyRef: { name: "datarater-function", key: "DATARATER_ALLOWED_ROOTS" },
      },
    }]);
    // Required (no `optional: true`): a missing Secret stops the pod instead of serving unauthed.
    expect(env("DATARATER_TOKEN")).toEqual([{
      name: "DATARATER_TOKEN",
      valueFrom: { secretKeyRef: { name: "datarater-function-token", key: "DATARATER_TOKEN" } },
    }]);
    expect(env("HOST")).toEqual([{ name: "HOST", value: "0.0.0.0" }]);
    // The token is never committed: no Secret of that name among the installed resources.
    for (const path of kustomization.resources as string[]) {
      for (const d of await loadAll(path)) {
        expect(d.kind === "Secret" && d.metadata.name === "datarater-function-token", path)
          .toBe(false);
      }
    }
  });
});
