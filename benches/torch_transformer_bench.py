#!/usr/bin/env python3
"""PyTorch on the CPU beside `etude bench` for the two models torch_bench.py does not cover: the Transformer
(`etude bench train --model transformer`, ../shared/peers/torch_transformer.py) and the gated WaveNet with
attention (`etude bench train --model wavenet-gated --attention 4`, ../shared/peers/torch_attention.py).

Usage:  python torch_transformer_bench.py --model {transformer,wavenet_gated_attn} [--batch 64 --window 128
        --vocab 162] [--threads 2] [--peers DIR] [--no-gen]

Prints one JSON object per line (kind=train | generate) with torch_bench.py's field names.

Training, the protocol of ../shared/peers/torch_bench.py: 4 fixed batches of seeded uniform-random tokens
cycled, Adam lr 1e-3, float32, one timed step = zero-grad + forward + mean cross-entropy over all B x T targets +
backward + Adam + loss.item(); `--warmup` untimed steps, then the median of `--steps` timed ones;
torch.set_num_threads(THREADS), interop 1. Sizes: etude's defaults (transformer: width 128, 4 heads, ff 512,
4 blocks; wavenet-gated: E 100, R 64, S 128, K 2, 10 blocks, 4 attention heads of 32), so the parameter counts
equal etude's (compare.sh prints both). FLOPs: etude's convention (ModelConfig::forward_macs, 2 per
multiply-add, matmuls/convs and the attention products only, forward + backward = 3 x forward).

Generation (transformer only), batch 1 under torch.inference_mode(): `incremental` = a key/value cache, as
etude's `rel_attention_decode`: every block keeps the keys and values of the last `window` positions in a
ring; the query of position p (0-based, len = p + 1 positions seen) scores the cached positions
pos = len - min(len, W) .. len - 1 with q . k_pos + q . rel[h, len - 1 - pos], so distances stay within
0..W-1; inside the first window that is exactly the full forward's last row (checked here: max abs difference
over the first `window` positions, `kv_vs_full_max_abs_diff`). The prime (`window` random tokens) fills the
cache with one full forward (`prime_ms_median`), then `--gen-tokens` tokens, each = sample from the softmax of
the last logits (torch.multinomial, sampling included in the time, as torch_bench.py) + one decode step; one
warm-up pass, then `--gen-reps` timed passes; mean and median ms per token. The same as `etude bench
generate --model transformer --incremental` (a 128-token prime, 50 tokens, 1 + 3 passes).
"""
import argparse
import json
import math
import os
import platform
import statistics
import sys
import time


def fail(msg):
    sys.exit(f"torch_transformer_bench.py: {msg}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, choices=["transformer", "wavenet_gated_attn"])
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "peers"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=162)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--gen-tokens", type=int, default=50)
    ap.add_argument("--gen-reps", type=int, default=3)
    ap.add_argument("--no-gen", action="store_true")
    ap.add_argument("--no-train", action="store_true", help="generation only")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.batch < 1 or args.window < 2 or args.vocab < 2:
        fail("--warmup, --steps and --batch must be at least 1, --window and --vocab at least 2")
    if not os.path.isfile(os.path.join(args.peers, "torch_transformer.py")):
        fail(f"--peers {args.peers}: no torch_transformer.py there")
    sys.path.insert(0, os.path.abspath(args.peers))
    try:
        import torch
    except ImportError:
        fail(f"PyTorch is missing for {sys.executable}: install it (pip install torch) or run another python")
    import torch.nn.functional as F
    import modelspec as ms
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    V, B, T = args.vocab, args.batch, args.window

    def emit(d):
        print(json.dumps(d), flush=True)

    base = {"framework": "torch", "version": torch.__version__, "model": args.model, "backend": "cpu",
            "threads": torch.get_num_threads(), "python": platform.python_version()}

    def build():
        torch.manual_seed(args.seed)
        if args.model == "transformer":
            import torch_transformer as tt
            d, heads, ff, layers = 128, 4, 512, 4
            net = tt.build(V, T, d, heads, ff, layers)
            macs = T * layers * (4 * d * d + 2 * d * ff) + layers * 3 * T * T * d // 2 + T * d * V
        else:
            import torch_attention as ta
            E, R, S, K, L, heads, dim = 100, 64, 128, 2, 10, 4, 32
            net = ta.build(V, E=E, R=R, S=S, K=K, L=L, heads=heads, dim=dim)
            hd = heads * dim
            macs = (T * E * R + L * T * K * R * 2 * R + (L - 1) * T * R * R + L * T * R * S + T * S * S + T * S * V
                    + 4 * T * S * hd + T * T * hd)
        return net, 2 * macs

    net, fwd_flop = build()
    nparams = sum(p.numel() for p in net.parameters())

    if not args.no_train:
        gen = torch.Generator().manual_seed(args.seed + 1)
        batches = []
        for _ in range(4):
            s = torch.randint(0, V, (B, T + 1), generator=gen)
            batches.append((s[:, :T].contiguous(), s[:, 1:].contiguous()))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        times, cpu, losses = [], [], []
        watch = ms.CpuWatch().__enter__()
        for i in range(args.warmup + args.steps):
            x, y = batches[i % len(batches)]
            if i == args.warmup:
                watch = ms.CpuWatch().__enter__()
            t0, c0 = time.perf_counter(), time.process_time()
            opt.zero_grad(set_to_none=True)
            logits = net(x)
            loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
            loss.backward()
            opt.step()
            lv = loss.item()
            dt = time.perf_counter() - t0
            losses.append(lv)
            if i >= args.warmup:
                times.append(dt)
                cpu.append(time.process_time() - c0)
        watch.__exit__(None, None, None)
        med = statistics.median(times)
        emit({**base, "kind": "train", "V": V, "B": B, "T": T, "params": nparams,
              "warmup": args.warmup, "steps": args.steps,
              "step_ms_median": round(med * 1e3, 2), "step_ms_min": round(min(times) * 1e3, 2),
              "step_ms_max": round(max(times) * 1e3, 2),
              "step_cpu_ms_median": round(statistics.median(cpu) * 1e3, 2),
              "windows_per_s": round(B / med, 2), "targets_per_s": round(B * T / med, 1),
              "input_tokens_per_s": round(B * T / med, 1),
              "fwd_flop_per_window": fwd_flop, "fwd_bwd_flop_per_window": 3 * fwd_flop,
              "achieved_gflops": round(3 * fwd_flop * B / med / 1e9, 2),
              "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4), **watch.result})

    if args.no_gen or args.model != "transformer":
        return
    net.eval()
    with torch.inference_mode():
        bench_generate(args, torch, F, ms, net, base, emit)


class KvCache:
    """Every block's keys and values of the last `window` positions, a ring `[H, W, D]` each (slot = position
    mod W), and how many positions were seen."""

    def __init__(self, torch, net, window):
        blk = net.blocks[0].attn
        self.h, self.dh, self.w = blk.h, blk.dh, window
        self.k = [torch.zeros(self.h, window, self.dh) for _ in net.blocks]
        self.v = [torch.zeros(self.h, window, self.dh) for _ in net.blocks]
        self.len = 0
        # dist[p % W][slot]: the distance len - 1 - pos of the position a slot holds once the ring is full.
        w = torch.arange(window)
        self.full_dist = (w.view(-1, 1) - w.view(1, -1)) % window          # [newest slot, slot]


def prime(torch, F, net, cache, x):
    """Full forward of x [1, n] (n <= W) filling the cache; returns the last position's logits [V].
    The same formulas as torch_transformer.RelAttention.forward, with k and v kept."""
    n = x.shape[1]
    d = net.emb.weight.shape[1]
    h = net.emb(x)
    i = torch.arange(n).view(n, 1)
    j = torch.arange(n).view(1, n)
    dist = (i - j).clamp(min=0)
    for l, blk in enumerate(net.blocks):
        a = blk.attn
        q, k, v = a.qkv(blk.ln1(h)).split(d, dim=2)
        q = q.view(1, n, a.h, a.dh).transpose(1, 2)
        k = k.view(1, n, a.h, a.dh).transpose(1, 2)
        v = v.view(1, n, a.h, a.dh).transpose(1, 2)
        cache.k[l][:, :n] = k[0]
        cache.v[l][:, :n] = v[0]
        s = q @ k.transpose(-1, -2) + torch.einsum("bhid,hijd->bhij", q, a.rel[:, dist])
        s = (s / math.sqrt(a.dh)).masked_fill(j > i, float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(1, n, d)
        h = h + a.proj(o)
        h = h + blk.mlp(blk.ln2(h))
    cache.len = n
    return net.head(net.ln_f(h[0, -1]))


def step(torch, net, cache, tok):
    """One decode step: feed token `tok` at position cache.len, return its logits [V]."""
    pos = cache.len
    W, H, D = cache.w, cache.h, cache.dh
    slot = pos % W
    n = min(pos + 1, W)
    if pos + 1 >= W:
        dist = cache.full_dist[slot]                                     # every slot, distance (pos - slot) mod W
    else:
        dist = pos - torch.arange(n)                                     # slots 0..pos hold positions 0..pos
    scale = 1.0 / math.sqrt(D)
    h = net.emb.weight[tok]
    d = h.shape[0]
    for l, blk in enumerate(net.blocks):
        a = blk.attn
        q, k, v = a.qkv(blk.ln1(h)).split(d)
        q = q.view(H, 1, D)
        cache.k[l][:, slot] = k.view(H, D)
        cache.v[l][:, slot] = v.view(H, D)
        kc, vc = cache.k[l][:, :n], cache.v[l][:, :n]                   # [H, n, D]
        qr = torch.bmm(q, a.rel.transpose(1, 2))[:, 0]                   # [H, W]: q . rel[h, r] for every r
        s = (torch.bmm(q, kc.transpose(1, 2))[:, 0] + qr[:, dist]) * scale   # [H, n]
        o = torch.bmm(torch.softmax(s, dim=-1).unsqueeze(1), vc)          # [H, 1, D]
        h = h + a.proj(o.reshape(d))
        h = h + blk.mlp(blk.ln2(h))
    cache.len = pos + 1
    return net.head(net.ln_f(h))


def bench_generate(args, torch, F, ms, net, base, emit):
    V, T = args.vocab, args.window
    gen = torch.Generator().manual_seed(args.seed + 2)
    # Check: the cache, fed one token at a time from empty, against the full forward's rows.
    x = torch.randint(0, V, (1, T), generator=gen)
    full = net(x)[0]                                                     # [T, V]
    cache = KvCache(torch, net, T)
    diff = 0.0
    for p in range(T):
        diff = max(diff, float((step(torch, net, cache, int(x[0, p])) - full[p]).abs().max()))
    # And the primed cache against the one fed token by token, past the window.
    c2 = KvCache(torch, net, T)
    diff_prime = float((prime(torch, F, net, c2, x) - full[-1]).abs().max())
    for t in range(3):
        tok = int(x[0, t])
        diff_prime = max(diff_prime, float((step(torch, net, c2, tok) - step(torch, net, cache, tok)).abs().max()))

    prime_toks = torch.randint(0, V, (1, T), generator=gen)
    per_tok, prime_ms = [], []
    watch = None
    for rep in range(args.gen_reps + 1):                                # rep 0 = warm-up
        if rep == 1:
            watch = ms.CpuWatch().__enter__()
        cache = KvCache(torch, net, T)
        t0 = time.perf_counter()
        logits = prime(torch, F, net, cache, prime_toks)
        if rep > 0:
            prime_ms.append((time.perf_counter() - t0) * 1e3)
        for _ in range(args.gen_tokens):
            t0 = time.perf_counter()
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).item()
            logits = step(torch, net, cache, nxt)
            if rep > 0:
                per_tok.append(time.perf_counter() - t0)
    watch.__exit__(None, None, None)
    mean = statistics.mean(per_tok)
    emit({**base, "kind": "generate", "mode": "incremental", "batch": 1, "window": T, "V": V,
          "tokens": args.gen_tokens, "reps": args.gen_reps,
          "ms_per_token_mean": round(mean * 1e3, 3),
          "ms_per_token_median": round(statistics.median(per_tok) * 1e3, 3),
          "tokens_per_s": round(1.0 / mean, 1),
          "prime_ms_median": round(statistics.median(prime_ms), 2),
          "kv_vs_full_max_abs_diff": diff, "prime_vs_stepwise_max_abs_diff": diff_prime, **watch.result})


if __name__ == "__main__":
    main()
