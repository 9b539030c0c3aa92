/**
 * A Web Worker that holds a share of the population (tfjs-wasm is single-threaded per worker, so
 * spreading the learners over workers is how meta-training uses more than one core). It runs a
 * {@link LocalPopulation} and answers `training/worker-pool.ts`'s requests.
 *
 * Protocol: `{id, method, args}` → `{id, result}` or `{id, error}`; the first request is
 * `init(backend, settings)`.
 */
/// <reference lib="deno.worker" />
import { type BackendName, useBackend } from "./backend.ts";
import type { MetaStepSettings } from "./meta-step.ts";
import { LocalPopulation } from "./population.ts";

let population: LocalPopulation | undefined;

type Request = { id: number; method: string; args: unknown[] };

async function handle(req: Request): Promise<unknown> {
  if (req.method === "init") {
    const [backend, settings] = req.args as [BackendName, MetaStepSettings];
    await useBackend(backend);
    population = new LocalPopulation(settings);
    return null;
  }
  if (!population) throw new Error("worker not initialised");
  const p = population as unknown as Record<string, (...a: unknown[]) => Promise<unknown>>;
  if (
    !["load", "replace", "metaGradients", "heldOutLosses", "save", "close"].includes(req.method)
  ) {
    throw new Error(`unknown method ${req.method}`);
  }
  return await p[req.method].apply(population, req.args);
}

self.onmessage = async (event: MessageEvent<Request>) => {
  const req = event.data;
  try {
    const result = await handle(req);
    self.postMessage({ id: req.id, result });
  } catch (e) {
    self.postMessage({ id: req.id, error: (e as Error).stack ?? String(e) });
  }
};
