#!/usr/bin/env python3
"""The reference DataRater meta-step of issue 3, written plainly in PyTorch.

This is the yardstick `scripts/bench/meta-step.ts` measures in the same run (figures are recorded
as ratios against it). It is the step a PyTorch user would write, not a tuned one:

- inner learner: causal byte-level LM, d=64, 1 pre-norm block with 4 heads, GELU MLP (ffn 256,
  the inner config's default), learned positions, byte vocabulary (+ BOS as input);
- rater: byte embedding (32) -> mean-pool over real bytes -> MLP (64 hidden, GELU) -> scalar;
- 2 unrolled plain-SGD inner updates of sum_i softmax(scores)_i * loss_i, each gradient taken with
  `torch.autograd.grad(..., create_graph=True)`;
- outer loss: mean NLL on a held-out batch; exact meta-gradient w.r.t. the rater's parameters;
- meta-update: gradient-norm clipping then AdamW (the trainer's clip -> Adam -> decoupled decay);
- 1 inner model, carried (detached) from one meta-step to the next, as the trainer does.

Batch 32, sequence 64 bytes. Timing covers a whole meta-step: batch sampling, the unrolled inner
updates, the meta-gradient and the meta-update. Median of the timed steps after warm-up.

`--size large` is one population member of the GPU example (k8s/examples/metatraining-gpu.yaml):
sequence 256, batch 128, LM d=128 with 2 layers, 4 heads and ffn 512, the same MLP rater and SGD
(LARGE_STEP in scripts/bench/lib/meta-step-bench.ts). `--device cuda` runs the same step on the GPU;
the data and parameters are drawn on the CPU as before and moved, so both devices start from the
same values.

    /usr/bin/python3 scripts/bench/reference/meta_step_torch.py [--threads 1] [--steps 8] \
        [--size tiny|reference|large] [--device cpu|cuda]

Prints one JSON line: {"msPerStep": ..., "threads": ..., "torch": "...", "device": ..., "size": ...}.
"""

import argparse
import json
import math
import random
import statistics
import sys
import time

import torch
import torch.nn.functional as F

BYTE_VOCAB = 256
BOS = 256  # the LM's input vocabulary is the 256 bytes plus BOS
INIT_STD = 0.02

SIZES = {
    "reference": {"seq_len": 64, "batch": 32, "lm": {"d": 64, "layers": 1, "heads": 4, "ffn": 256}},
    "tiny": {"seq_len": 16, "batch": 8, "lm": {"d": 16, "layers": 1, "heads": 2, "ffn": 32}},
    "large": {"seq_len": 256, "batch": 128, "lm": {"d": 128, "layers": 2, "heads": 4, "ffn": 512}},
}
# The size in use; main() switches them for --size.
SEQ_LEN = SIZES["reference"]["seq_len"]
BATCH = SIZES["reference"]["batch"]
LM = SIZES["reference"]["lm"]
RATER = {"d": 32, "hidden": 64}
DEVICE = torch.device("cpu")
UNROLL = 2
INNER_LR = 0.1  # the bench's inner SGD learning rate
META = {"lr": 5e-3, "weight_decay": 0.1, "clip_norm": 0.01}


def param(*shape, ones=False, zeros=False):
    if ones:
        t = torch.ones(*shape)
    elif zeros:
        t = torch.zeros(*shape)
    else:
        t = torch.randn(*shape) * INIT_STD
    return t.to(DEVICE).requires_grad_(True)


def init_lm():
    d, ffn = LM["d"], LM["ffn"]
    p = {"embed": param(BOS + 1, d), "pos": param(SEQ_LEN, d)}
    for i in range(LM["layers"]):
        p.update({
            f"l{i}.ln1.g": param(d, ones=True), f"l{i}.ln1.b": param(d, zeros=True),
            # nn.Linear layout: weight [out, in], used with F.linear.
            f"l{i}.attn.wqkv": param(3 * d, d), f"l{i}.attn.bqkv": param(3 * d, zeros=True),
            f"l{i}.attn.wo": param(d, d), f"l{i}.attn.bo": param(d, zeros=True),
            f"l{i}.ln2.g": param(d, ones=True), f"l{i}.ln2.b": param(d, zeros=True),
            f"l{i}.mlp.w1": param(ffn, d), f"l{i}.mlp.b1": param(ffn, zeros=True),
            f"l{i}.mlp.w2": param(d, ffn), f"l{i}.mlp.b2": param(d, zeros=True),
        })
    p.update({
        "lnf.g": param(d, ones=True), "lnf.b": param(d, zeros=True),
        "head.w": param(BYTE_VOCAB, d), "head.b": param(BYTE_VOCAB, zeros=True),
    })
    return p


def init_rater():
    d, h = RATER["d"], RATER["hidden"]
    return {
        "embed": param(BYTE_VOCAB, d),
        "mlp.w1": param(h, d), "mlp.b1": param(h, zeros=True),
        "mlp.w2": param(1, h), "mlp.b2": param(1, zeros=True),
    }


def causal_mask():
    return torch.triu(torch.ones(SEQ_LEN, SEQ_LEN, dtype=torch.bool), diagonal=1).to(DEVICE)


CAUSAL = causal_mask()


def lm_loss_per_record(p, batch):
    """Mean next-byte NLL (nats) over each record's real bytes: shape [batch]."""
    inputs, targets, mask, lengths = batch
    b, n = inputs.shape
    d, heads = LM["d"], LM["heads"]
    dh = d // heads
    x = F.embedding(inputs, p["embed"]) + p["pos"][:n]
    for i in range(LM["layers"]):
        h = F.layer_norm(x, (d,), p[f"l{i}.ln1.g"], p[f"l{i}.ln1.b"])
        q, k, v = F.linear(h, p[f"l{i}.attn.wqkv"], p[f"l{i}.attn.bqkv"]).split(d, dim=-1)
        q, k, v = (t.view(b, n, heads, dh).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(dh)
        att = att.masked_fill(CAUSAL[:n, :n], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, n, d)
        x = x + F.linear(y, p[f"l{i}.attn.wo"], p[f"l{i}.attn.bo"])
        h = F.layer_norm(x, (d,), p[f"l{i}.ln2.g"], p[f"l{i}.ln2.b"])
        h = F.gelu(F.linear(h, p[f"l{i}.mlp.w1"], p[f"l{i}.mlp.b1"]), approximate="tanh")
        x = x + F.linear(h, p[f"l{i}.mlp.w2"], p[f"l{i}.mlp.b2"])
    x = F.layer_norm(x, (d,), p["lnf.g"], p["lnf.b"])
    logits = F.linear(x, p["head.w"], p["head.b"])
    nll = F.cross_entropy(logits.reshape(b * n, BYTE_VOCAB), targets.reshape(b * n),
                          reduction="none").view(b, n)
    return (nll * mask).sum(1) / lengths


def rater_scores(eta, batch):
    """phi_eta(x): one score per record, shape [batch]."""
    _, tokens, mask, lengths = batch
    e = F.embedding(tokens, eta["embed"])
    pooled = (e * mask.unsqueeze(-1)).sum(1) / lengths.unsqueeze(-1)
    h = F.gelu(F.linear(pooled, eta["mlp.w1"], eta["mlp.b1"]), approximate="tanh")
    return F.linear(h, eta["mlp.w2"], eta["mlp.b2"]).squeeze(-1)


def make_texts(n, rng):
    """Prose-like records of ~100 bytes, like the TypeScript bench's (timing ignores content)."""
    words = "the of and to in is was he for it with as his on be at by had not are but".split()
    out = []
    for _ in range(n):
        s = ""
        while len(s) < 100:
            s += rng.choice(words) + " "
        out.append(s)
    return out


def encode(texts):
    """Records as [n, SEQ_LEN] byte tensors (head kept, zero-padded) with masks and lengths."""
    tokens = torch.zeros(len(texts), SEQ_LEN, dtype=torch.long)
    mask = torch.zeros(len(texts), SEQ_LEN)
    for i, t in enumerate(texts):
        b = list(t.encode("utf-8")[:SEQ_LEN]) or [0]
        tokens[i, :len(b)] = torch.tensor(b)
        mask[i, :len(b)] = 1
    return tokens, mask


def sample_batch(data, size):
    """(lm inputs, byte targets, mask, lengths) for `size` records drawn with replacement."""
    tokens, mask = data
    idx = torch.randint(tokens.shape[0], (size,))
    tok, m = tokens[idx.to(tokens.device)], mask[idx.to(mask.device)]
    bos = torch.full((size, 1), BOS, dtype=torch.long, device=tok.device)
    inputs = torch.cat([bos, tok[:, :-1]], dim=1)
    return inputs, tok, m, m.sum(1)


def meta_step(eta, theta, meta_opt, train, heldout):
    """One meta-step; returns the learner after the inner updates and the meta-gradient's norm."""
    names = list(theta)
    params = [theta[n] for n in names]
    for _ in range(UNROLL):
        x = sample_batch(train, BATCH)
        w = torch.softmax(rater_scores(eta, x), dim=0)
        inner_loss = (w * lm_loss_per_record(dict(zip(names, params)), x)).sum()
        grads = torch.autograd.grad(inner_loss, params, create_graph=True)
        params = [p - INNER_LR * g for p, g in zip(params, grads)]
    outer = sample_batch(heldout, BATCH)
    meta_loss = lm_loss_per_record(dict(zip(names, params)), outer).mean()
    meta_opt.zero_grad()
    eta_list = list(eta.values())
    meta_grads = torch.autograd.grad(meta_loss, eta_list)
    for p, g in zip(eta_list, meta_grads):
        p.grad = g
    norm = torch.nn.utils.clip_grad_norm_(eta_list, META["clip_norm"])
    meta_opt.step()
    next_theta = {n: p.detach().requires_grad_(True) for n, p in zip(names, params)}
    return next_theta, float(norm), float(meta_loss)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="timed meta-steps (median reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", choices=sorted(SIZES), default="reference",
                    help="reference (issue 3's step, default), large (a GPU example member) "
                    "or tiny (a smoke test)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args()
    if args.threads < 1 or args.steps < 1 or args.warmup < 0:
        ap.error("--threads and --steps must be >= 1, --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"--device cuda: torch {torch.__version__} sees no CUDA device", file=sys.stderr)
        sys.exit(2)

    global SEQ_LEN, BATCH, LM, DEVICE, CAUSAL
    SEQ_LEN, BATCH, LM = (SIZES[args.size][k] for k in ("seq_len", "batch", "lm"))
    DEVICE = torch.device(args.device)
    CAUSAL = causal_mask()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    train = tuple(t.to(DEVICE) for t in encode(make_texts(2000, rng)))
    heldout = tuple(t.to(DEVICE) for t in encode(make_texts(500, rng)))

    theta = init_lm()
    eta = init_rater()
    meta_opt = torch.optim.AdamW(eta.values(), lr=META["lr"],
                                 weight_decay=META["weight_decay"])

    times = []
    for step in range(args.warmup + args.steps):
        started = time.perf_counter()
        theta, norm, meta_loss = meta_step(eta, theta, meta_opt, train, heldout)
        elapsed = time.perf_counter() - started
        # A zero or non-finite meta-gradient would mean the step measured is not the real one.
        if not (math.isfinite(norm) and norm > 0 and math.isfinite(meta_loss)):
            print(f"meta-step {step}: meta-gradient norm {norm}, meta-loss {meta_loss}: "
                  "the reference step is broken", file=sys.stderr)
            sys.exit(1)
        if step >= args.warmup:
            times.append(elapsed * 1000)

    print(json.dumps({
        "msPerStep": round(statistics.median(times)),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "steps": args.steps,
        "device": args.device,
        "size": args.size,
    }))


if __name__ == "__main__":
    main()
