#!/usr/bin/env python3
"""PyTorch on a CUDA GPU: the same measurements as ../shared/peers/torch_bench.py (which is CPU-only).

Usage:  python torch_cuda_bench.py --model {lstm,lstm_seq,wavenet_simple,wavenet_gated} [--peers DIR]
Prints one JSON object per line (kind=train | generate) with torch_bench.py's field names, plus
"device" (the GPU's name), so that benches/compare.sh can put them beside `etude bench --backend gpu`.

The models, sizes (V=300, B=128, T=128), data (4 fixed random batches cycled), optimiser (Adam 1e-3)
and loss come from the peers' modelspec.py / torch_models.py. One timed step = zero-grad + forward +
loss + backward + Adam + loss.item() (which waits for the GPU), as in torch_bench.py and as etude's
bench (which reads the loss back). Generation: batch 1, the token sampled on the GPU and read back
every step (torch.multinomial + .item()), `stateful` (nn.LSTM with carried state) and `full_window`
(the whole 128-token window rerun per token). cuDNN is PyTorch's default for the LSTM.
"""
import argparse
import json
import os
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "peers"))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--gen-tokens", type=int, default=50)
    ap.add_argument("--gen-reps", type=int, default=3)
    ap.add_argument("--no-gen", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu to check this script without a GPU")
    args = ap.parse_args()
    sys.path.insert(0, args.peers)
    import torch
    import modelspec as ms
    import torch_models as tm

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_cuda_bench.py: PyTorch sees no CUDA device")
    dev = torch.device(args.device)
    base = {"framework": "torch", "version": torch.__version__, "model": args.model, "backend": args.device,
            "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"}

    def emit(d):
        print(json.dumps(d), flush=True)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    net = tm.build(args.model, ms.V, ms.T).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=ms.LR)
    batches = []
    for _ in range(4):
        s = torch.randint(0, ms.V, (ms.B, ms.T + 1), generator=gen)
        x = s[:, :ms.T].contiguous()
        y = s[:, 1:].contiguous() if args.model in ms.SEQ_MODELS else s[:, ms.T].contiguous()
        batches.append((x.to(dev), y.to(dev)))
    times = []
    for i in range(args.warmup + args.steps):
        x, y = batches[i % len(batches)]
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = tm.loss_fn(net(x), y)
        loss.backward()
        opt.step()
        loss.item()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    fl = ms.flops(args.model)
    targets = ms.B * (ms.T if args.model in ms.SEQ_MODELS else 1)
    emit({**base, "kind": "train", "B": ms.B, "T": ms.T, "V": ms.V, "steps": args.steps,
          "step_ms_median": round(med * 1e3, 3), "step_ms_min": round(min(times) * 1e3, 3),
          "step_ms_max": round(max(times) * 1e3, 3), "windows_per_s": round(ms.B / med, 2),
          "targets_per_s": round(targets / med, 1),
          "achieved_gflops": round(fl["fwd_bwd_flop_per_window"] * ms.B / med / 1e9, 2)})

    modes = {"lstm": ["stateful", "full_window"], "wavenet_simple": ["full_window"]}.get(args.model, [])
    if args.no_gen:
        modes = []
    net.eval()
    for mode in modes:
        g = torch.Generator(device=dev).manual_seed(args.seed + 2)
        prime = torch.randint(0, ms.V, (1, ms.T), generator=torch.Generator().manual_seed(args.seed + 2))
        per_tok = []
        with torch.inference_mode():
            for rep in range(args.gen_reps + 1):  # rep 0 = warm-up
                toks = prime[0].tolist()
                state = None
                if mode == "stateful":
                    _, state = net(prime[:, :-1].to(dev), return_state=True)
                for _ in range(args.gen_tokens):
                    t0 = time.perf_counter()
                    if mode == "stateful":
                        logits, state = net(torch.tensor([[toks[-1]]], device=dev), state, return_state=True)
                    else:
                        logits = net(torch.tensor([toks[-ms.T:]], device=dev))
                    logits = logits.reshape(-1, ms.V)[-1]
                    toks.append(torch.multinomial(torch.softmax(logits, -1), 1, generator=g).item())
                    if rep > 0:
                        per_tok.append(time.perf_counter() - t0)
        emit({**base, "kind": "generate", "mode": mode, "batch": 1, "window": ms.T,
              "tokens": args.gen_tokens, "reps": args.gen_reps,
              "ms_per_token_mean": round(statistics.mean(per_tok) * 1e3, 3),
              "ms_per_token_median": round(statistics.median(per_tok) * 1e3, 3)})


if __name__ == "__main__":
    main()
