#!/usr/bin/env bash
# etude vs PyTorch on this machine's CPU, measured in one run, alternating.
#
# For every model (lstm, lstm-seq, wavenet, wavenet-gated) and each of ROUNDS rounds it runs
# `etude bench train` (release build, CPU backend) and then ../shared/peers/torch_bench.py for the
# same model, batch (128) and window (128), so that both see the same machine load; for lstm and
# wavenet it also times generation (etude bench generate; torch_bench.py's stateful / full_window).
# Then it prints the medians over the rounds and the etude / PyTorch ratios (> 1: etude is faster):
# windows/s for the many-to-one models, target tokens/s for the many-to-many ones, and for
# generation PyTorch's ms per token over etude's.
#
# In the same rounds, after them, the two attention models at the default recipe's sizes (TBATCH 64, window 128, TVOCAB 162, the built-in
# corpus's vocabulary): `etude bench train --model transformer` (width 128, 4 heads, ff 512, 4 blocks) against
# benches/torch_transformer_bench.py --model transformer (../shared/peers/torch_transformer.py), and
# `etude bench train --model wavenet-gated --attention 4` against --model wavenet_gated_attn
# (../shared/peers/torch_attention.py); and generation per token at batch 1 with the key/value cache,
# `etude bench generate --model transformer --incremental` against the script's own cached decode. Ratios as above:
# target tokens/s, and PyTorch's ms per token over etude's. CPU only (BACKEND=gpu runs the four classic models).
#
# BACKEND=gpu compares etude's GPU backend (wgpu) with PyTorch on CUDA instead
# (benches/torch_cuda_bench.py, same sizes and fields); it needs a CUDA GPU that wgpu also sees
# through Vulkan.
#
# Environment: PYTHON (a python with torch; default python3), BACKEND (cpu or gpu; default cpu),
# THREADS (CPU threads for each side: torch_bench.py / torch_transformer_bench.py --threads and etude's
# RAYON_NUM_THREADS; 2),
# ROUNDS (2), STEPS (10 timed steps), WARMUP (3), PEERS (../shared/peers, relative to the repo),
# OUT (the raw JSON lines; default a temporary file), ETUDE (an etude binary to use instead of building),
# MODELS (which models, space-separated; default all six on the CPU: lstm lstm-seq wavenet wavenet-gated
# transformer wavenet-gated-attn; the four classic ones on the GPU), TBATCH (64) and TVOCAB (162): the
# attention models' batch and vocabulary, WAIT_QUIET (seconds to wait, before each model of each round, for
# the other processes to use under 10% of the CPU over 5 s; default 0: no wait). On a busy machine PyTorch's
# OpenMP threads suffer far more than etude's (a 2-thread PyTorch decode step took 7x its 1-thread time while
# two other jobs ran), so only figures with other CPU near 0 compare the frameworks.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
PYTHON=${PYTHON:-python3}
PEERS=${PEERS:-$here/../shared/peers}
ROUNDS=${ROUNDS:-2}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-3}
OUT=${OUT:-$(mktemp /tmp/etude-compare.XXXXXX.jsonl)}
BACKEND=${BACKEND:-cpu}
THREADS=${THREADS:-2}
TBATCH=${TBATCH:-64}
TVOCAB=${TVOCAB:-162}
export RAYON_NUM_THREADS=$THREADS
classic="lstm lstm-seq wavenet wavenet-gated"
if [ "$BACKEND" = cpu ]; then MODELS=${MODELS:-$classic transformer wavenet-gated-attn}; else MODELS=${MODELS:-$classic}; fi
for model in $MODELS; do
    case $model in
        lstm|lstm-seq|wavenet|wavenet-gated) ;;
        transformer|wavenet-gated-attn)
            if [ "$BACKEND" != cpu ]; then
                echo "compare.sh: MODELS: $model is compared on the CPU only (BACKEND=cpu)" >&2; exit 2
            fi ;;
        *) echo "compare.sh: MODELS: unknown model $model (lstm lstm-seq wavenet wavenet-gated transformer wavenet-gated-attn)" >&2; exit 2 ;;
    esac
done
case $BACKEND in
    cpu) torch_bench=("$PEERS/torch_bench.py" --threads "$THREADS") ;;
    gpu) torch_bench=("$here/benches/torch_cuda_bench.py" --peers "$PEERS") ;;
    *) echo "compare.sh: BACKEND must be cpu or gpu, not $BACKEND" >&2; exit 2 ;;
esac

if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    echo "compare.sh: PyTorch is missing for $PYTHON: install it (pip install torch), or point PYTHON at a python that has it" >&2
    exit 2
fi
if [ ! -f "$PEERS/torch_bench.py" ]; then
    echo "compare.sh: $PEERS/torch_bench.py not found (set PEERS)" >&2
    exit 2
fi
if [ "$STEPS" -lt 5 ] || [ "$WARMUP" -lt 3 ]; then
    echo "compare.sh: torch_bench.py needs STEPS >= 5 and WARMUP >= 3" >&2
    exit 2
fi

etude=${ETUDE:-$here/target/release/etude}
if [ -z "${ETUDE:-}" ]; then cargo build --release --quiet; fi
: > "$OUT"
echo "raw results: $OUT ($ROUNDS rounds, $STEPS timed steps after $WARMUP warm-up; $THREADS threads; $PYTHON)" >&2

WAIT_QUIET=${WAIT_QUIET:-0}
wait_quiet() {  # waits up to WAIT_QUIET seconds for other processes to use < 10% of the CPU over 5 s
    python3 - "$WAIT_QUIET" <<'PY'
import os, sys, time
def busy():
    v = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return sum(v[:8]) - v[3] - v[4], sum(v[:8])
end = time.time() + float(sys.argv[1])
while time.time() < end:
    b0, t0 = busy(); time.sleep(5); b1, t1 = busy()
    if (b1 - b0) / max(1, t1 - t0) < 0.1:
        sys.exit(0)
print(f"compare.sh: the machine did not go idle within {sys.argv[1]} s; measuring anyway", file=sys.stderr)
PY
}

for round in $(seq 1 "$ROUNDS"); do
    for model in $MODELS; do
        if [ "$WAIT_QUIET" != 0 ]; then wait_quiet; fi
        case $model in
            transformer|wavenet-gated-attn)
                torch_name=${model//-/_}
                args=(--model "${model%-attn}" --batch "$TBATCH" --window 128 --vocab "$TVOCAB")
                [ "$model" = wavenet-gated-attn ] && args+=(--attention 4)
                echo "round $round: $model (etude, then torch)" >&2
                "$etude" bench train "${args[@]}" --steps "$STEPS" --warmup "$WARMUP" --json >> "$OUT"
                gen=--no-gen
                if [ "$model" = transformer ]; then
                    gen=
                    "$etude" bench generate --model transformer --incremental --window 128 --vocab "$TVOCAB" --json >> "$OUT"
                fi
                "$PYTHON" "$here/benches/torch_transformer_bench.py" --model "$torch_name" --peers "$PEERS" \
                    --threads "$THREADS" --batch "$TBATCH" --window 128 --vocab "$TVOCAB" \
                    --steps "$STEPS" --warmup "$WARMUP" $gen >> "$OUT"
                continue ;;
        esac
        case $model in
            lstm) torch_name=lstm ;;
            lstm-seq) torch_name=lstm_seq ;;
            wavenet) torch_name=wavenet_simple ;;
            wavenet-gated) torch_name=wavenet_gated ;;
        esac
        echo "round $round: $model (etude, then torch)" >&2
        "$etude" bench train --model "$model" --backend "$BACKEND" --batch 128 --window 128 --vocab 300 \
            --steps "$STEPS" --warmup "$WARMUP" --json >> "$OUT"
        gen=--no-gen
        if [ "$model" = lstm ] || [ "$model" = wavenet ]; then
            gen=
            "$etude" bench generate --model "$model" --backend "$BACKEND" --json >> "$OUT"
        fi
        "$PYTHON" "${torch_bench[@]}" --model "$torch_name" --steps "$STEPS" --warmup "$WARMUP" $gen >> "$OUT"
    done
done

python3 - "$OUT" "$BACKEND" "$MODELS" "$TBATCH" "$TVOCAB" <<'PY'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
run = sys.argv[3].split()
tbatch, tvocab = sys.argv[4], sys.argv[5]
names = {"lstm": "lstm", "lstm-seq": "lstm_seq", "wavenet": "wavenet_simple", "wavenet-gated": "wavenet_gated"}
attn_names = {"transformer": "transformer", "wavenet-gated-attn": "wavenet_gated_attn"}
seq = {"lstm-seq", "wavenet-gated", "transformer", "wavenet-gated-attn"}

QUIET = 0.1  # at most this share of the CPU used by other processes counts as an idle run

def is_model(r, fw, model):
    """etude reports the gated WaveNet with attention as model wavenet-gated with attention_heads."""
    if fw == "etude" and model in ("wavenet-gated", "wavenet-gated-attn"):
        return r.get("model") == "wavenet-gated" and (r.get("attention_heads") is not None) == (model == "wavenet-gated-attn")
    return r.get("model") == model

def med(fw, kind, model, key, mode=None):
    """Median over the rounds of one field; only the rounds run on an idle machine when there are
    any (both benchmarks record other_cpu_frac), all rounds otherwise."""
    sel = [r for r in rows if r.get("framework") == fw and r.get("kind") == kind
           and is_model(r, fw, model) and (mode is None or r.get("mode") == mode)]
    quiet = [r for r in sel if (r.get("other_cpu_frac") or 0.0) <= QUIET]
    vals = [r[key] for r in (quiet or sel) if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")

def train_table(title, pairs, params=False):
    print(f"\n{title}\n")
    extra = " params (etude / torch) |" if params else ""
    print(f"| model |{extra} etude ms/step | torch ms/step | etude windows/s | torch windows/s | etude tokens/s | torch tokens/s | etude GFLOP/s | torch GFLOP/s | ratio etude/torch | other CPU (etude / torch) |")
    print("|---|" + ("---|" if params else "") + "---|---|---|---|---|---|---|---|---|---|")
    for m, t in pairs:
        key = "targets_per_s" if m in seq else "windows_per_s"
        e_ms, t_ms = med("etude", "train", m, "step_ms_median"), med("torch", "train", t, "step_ms_median")
        e_w, t_w = med("etude", "train", m, "windows_per_s"), med("torch", "train", t, "windows_per_s")
        e_k, t_k = med("etude", "train", m, "targets_per_s"), med("torch", "train", t, "targets_per_s")
        e_g, t_g = med("etude", "train", m, "achieved_gflops"), med("torch", "train", t, "achieved_gflops")
        ratio = med("etude", "train", m, key) / med("torch", "train", t, key)
        e_o, t_o = med("etude", "train", m, "other_cpu_frac"), med("torch", "train", t, "other_cpu_frac")
        p = f" {med('etude', 'train', m, 'params'):,.0f} / {med('torch', 'train', t, 'params'):,.0f} |" if params else ""
        print(f"| {m} |{p} {e_ms:.1f} | {t_ms:.1f} | {e_w:.1f} | {t_w:.1f} | {e_k:.0f} | {t_k:.0f} | {e_g:.1f} | {t_g:.1f} | {ratio:.2f} ({key}) | {e_o:.2f} / {t_o:.2f} |")

backend = sys.argv[2].upper()
classic = [(m, t) for m, t in names.items() if m in run]
attn = [(m, t) for m, t in attn_names.items() if m in run]
if classic:
    train_table(f"Training, {backend}, B=128 T=128 V=300 (medians over rounds)", classic)
if attn:
    train_table(f"Training, the attention models, {backend}, B={tbatch} T=128 V={tvocab} (medians over rounds; "
                "wavenet-gated-attn = etude's wavenet-gated --attention 4 / torch_attention.py)", attn, params=True)

print("\nother CPU = share of the cores other processes used during the timed steps (0 = idle machine),")
print(f"median over the rounds with at most {QUIET} (over all rounds when none was that quiet: then the")
print("numbers are not comparable with idle-machine ones; rerun with more ROUNDS).")
gens = [(m, em, tm, names.get(m, m)) for m, em, tm in [("lstm", "incremental", "stateful"), ("lstm", "sliding_window", "full_window"),
        ("wavenet", "sliding_window", "full_window"), ("transformer", "incremental", "incremental")] if m in run]
if gens:
    note = f"; transformer: V={tvocab}, the key/value cache, 128-token prime" if "transformer" in run else ""
    print(f"\nGeneration, {backend}, batch 1, ms per token (mean; ratio = torch ms / etude ms, > 1: etude faster{note})\n")
    print("| model | mode (etude / torch) | etude ms | torch ms | ratio | other CPU (etude / torch) |")
    print("|---|---|---|---|---|---|")
    for m, em, tm, tn in gens:
        e = med("etude", "generate", m, "ms_per_token_mean", em)
        t = med("torch", "generate", tn, "ms_per_token_mean", tm)
        e_o, t_o = med("etude", "generate", m, "other_cpu_frac", em), med("torch", "generate", tn, "other_cpu_frac", tm)
        print(f"| {m} | {em} / {tm} | {e:.3f} | {t:.3f} | {t / e:.2f} | {e_o:.2f} / {t_o:.2f} |")
    if "transformer" in run:
        d = med("torch", "generate", "transformer", "kv_vs_full_max_abs_diff", "incremental")
        print(f"\nPyTorch's cached decode against its full forward over the first window: max abs difference {d:.1e}")
PY
