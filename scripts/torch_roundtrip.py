#!/usr/bin/env python3
"""Load an etude checkpoint into PyTorch and check that it computes etude's loss.

    python3 scripts/torch_roundtrip.py CHECKPOINT FILE.mid [FILE.mid ...] [--etude PATH]

1. `etude eval --model CHECKPOINT --json --data FILES --dump-windows W.json` gives etude's mean
   cross-entropy and the token ids of the windows it evaluated (and their targets).
2. `safetensors.torch.load_file(CHECKPOINT)`, without the `optimizer.*` entries (Adam's moments),
   loads with `load_state_dict(strict=True)` into the PyTorch model of
   ../shared/peers/torch_models.py, built from the config in the checkpoint's metadata
   (`__metadata__["etude"]`, JSON).
3. PyTorch's mean cross-entropy over the same windows is compared with etude's: the script prints
   both and their difference, and exits 1 when |difference| > --tol (default 1e-4; both sides
   compute in float32, and summing a few thousand per-target losses in different orders differs
   by ~1e-6).

Exit status: 0 agree, 1 disagree, 2 usage or setup error.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def fail(msg):
    print(f"torch_roundtrip: {msg}", file=sys.stderr)
    sys.exit(2)


def peers_dir(arg):
    for d in [arg, os.path.join(ROOT, "..", "shared", "peers"), os.path.join(ROOT, "shared", "peers")]:
        if d and os.path.isfile(os.path.join(d, "torch_models.py")):
            return os.path.abspath(d)
    fail("cannot find torch_models.py (../shared/peers); pass --peers DIR")


def etude_meta(path):
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        md = f.metadata() or {}
    if "etude" not in md:
        fail(f"{path}: no etude metadata (not an etude checkpoint)")
    return json.loads(md["etude"])


def build_model(tm, cfg, window):
    """The PyTorch model for etude's ModelConfig `cfg` (its JSON, tagged by `kind`)."""
    import torch.nn as nn

    kind, V = cfg["kind"], cfg["vocab"]
    if kind == "lstm":
        name = "lstm_seq" if cfg["seq"] else "lstm"
        m = tm.build(name, V, window, E=cfg["embed"], H=cfg["hidden"], D=cfg["dense"])
        if cfg["layers"] != 2:  # the peers' model fixes two layers
            m.lstm = nn.LSTM(cfg["embed"], cfg["hidden"], num_layers=cfg["layers"], batch_first=True)
        return m
    if kind == "wavenet":
        return tm.build(
            "wavenet_simple", V, cfg["window"],
            E=cfg["embed"], C=cfg["channels"], K=cfg["kernel"], L=cfg["layers"], D=cfg["dense"],
        )
    if kind == "wavenet-gated":
        L, stacks, K = cfg["layers"], cfg.get("stacks", 1), cfg["kernel"]
        m = tm.build("wavenet_gated", V, window, E=cfg["embed"], R=cfg["residual"], S=cfg["skip"], K=K, L=L * stacks)
        # etude repeats the dilations every L blocks (block i: 2^(i mod L)); the peers' model counts on.
        for i, b in enumerate(m.blocks):
            d = 2 ** (i % L)
            b.dil.dilation = (d,)
            b.dil.left_pad = (K - 1) * d
        return m
    fail(f"unknown model kind {kind!r}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("data", nargs="+", help="MIDI files or folders to evaluate on")
    ap.add_argument("--etude", default=os.path.join(ROOT, "target", "debug", "etude"), help="the etude binary")
    ap.add_argument("--peers", default=None, help="folder of torch_models.py (default ../shared/peers)")
    ap.add_argument("--max-windows", type=int, default=256, help="windows evaluated (evenly spaced)")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()

    try:
        import torch
        from safetensors.torch import load_file
    except ImportError as e:
        fail(f"needs torch and safetensors ({e})")
    sys.path.insert(0, peers_dir(args.peers))
    import torch_models as tm

    if not os.path.isfile(args.etude):
        fail(f"{args.etude}: no etude binary (cargo build, or pass --etude)")
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "windows.json")
        cmd = [args.etude, "eval", "--model", args.checkpoint, "--json", "--backend", "cpu",
               "--max-windows", str(args.max_windows), "--dump-windows", dump, "--data", *args.data]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            fail(f"etude eval failed:\n{run.stderr}")
        report = json.loads(run.stdout)
        with open(dump) as f:
            windows = json.load(f)

    meta = etude_meta(args.checkpoint)
    window = meta["data"]["data"]["window"]
    model = build_model(tm, meta["model"], window)
    state = {k: v for k, v in load_file(args.checkpoint).items() if not k.startswith("optimizer.")}
    model.load_state_dict(state, strict=True)
    model.eval()

    x = torch.tensor(windows["inputs"], dtype=torch.long)
    y = torch.tensor(windows["targets"], dtype=torch.long)
    with torch.no_grad():
        logits = model(x)
        if logits.dim() == 3 and y.dim() == 1:
            # A many-to-many model is scored at its last position (etude's held-out metric).
            logits = logits[:, -1, :]
        torch_loss = tm.loss_fn(logits, y).item()
    etude_loss = report["loss"]
    diff = torch_loss - etude_loss
    print(f"model {report['model']}, {x.shape[0]} windows of {x.shape[1]} tokens, {report['targets']} targets")
    print(f"etude loss   {etude_loss:.7f}")
    print(f"torch loss   {torch_loss:.7f}")
    print(f"difference   {diff:.3e} (tolerance {args.tol:g})")
    if abs(diff) > args.tol:
        print("torch_roundtrip: the losses disagree", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
