/**
 * The paper's toy result, end to end through the trainer: records corrupted at known noise
 * levels, a clean held-out set; after meta-training the rater ranks corrupted records below clean
 * ones and its score falls with the noise level.
 */
import { expect, it } from "vitest";
import { encodeBatch } from "../../lib/bytes.ts";
import { datasetFromTexts } from "../../training/data.ts";
import { disposeParams, toTensors } from "../../training/params.ts";
import { raterScores } from "../../training/rater.ts";
import { train } from "../../training/trainer.ts";
import { rocAuc, spearman, tinyTrainConfig, toyCorpus } from "./toy.ts";
import { FileStorage } from "../../lib/storage.ts";

const storage = new FileStorage();

it("learns to score noisier records lower (AUC ≥ 0.9, Spearman ≤ −0.8 on unseen records)", async () => {
  const seqLen = 32;
  const output = await Deno.makeTempDir({ prefix: "toy-" });
  const config = tinyTrainConfig({
    output,
    seqLen,
    steps: 60,
    population: 2,
    resetEvery: 40,
    warmupSteps: 10,
  });
  const corpus = toyCorpus(1, 500, 200, seqLen);
  const result = await train(storage, config, {
    datasets: {
      train: datasetFromTexts("train", corpus.train.map((r) => r.text), seqLen),
      heldout: datasetFromTexts("heldout", corpus.heldout, seqLen),
    },
    export: false,
    progress: "none",
  });
  expect(result.step).toBe(60);

  // Fresh records from another seed: the rater generalises, it did not memorise.
  const test = toyCorpus(99, 500, 0, seqLen).train;
  const eta = toTensors(result.etaEma);
  const t = raterScores(eta, config.rater, encodeBatch(test.map((r) => r.text), seqLen));
  const scores = Array.from(await t.data());
  t.dispose();
  disposeParams(eta);
  const clean = scores.filter((_, i) => test[i].noise === 0);
  const corrupted = scores.filter((_, i) => test[i].noise > 0);
  expect(rocAuc(clean, corrupted)).toBeGreaterThanOrEqual(0.9);
  expect(spearman(scores, test.map((r) => r.noise))).toBeLessThanOrEqual(-0.8);
  await Deno.remove(output, { recursive: true });
});
