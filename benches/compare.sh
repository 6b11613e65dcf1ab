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
# BACKEND=gpu compares etude's GPU backend (wgpu) with PyTorch on CUDA instead
# (benches/torch_cuda_bench.py, same sizes and fields); it needs a CUDA GPU that wgpu also sees
# through Vulkan.
#
# Environment: PYTHON (a python with torch; default python3), BACKEND (cpu or gpu; default cpu),
# THREADS (CPU threads for each side: torch_bench.py --threads and etude's RAYON_NUM_THREADS; 2),
# ROUNDS (2), STEPS (10 timed steps), WARMUP (3), PEERS (../shared/peers, relative to the repo),
# OUT (the raw JSON lines; default a temporary file), ETUDE (an etude binary to use instead of building).
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
export RAYON_NUM_THREADS=$THREADS
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

for round in $(seq 1 "$ROUNDS"); do
    for model in lstm lstm-seq wavenet wavenet-gated; do
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

python3 - "$OUT" "$BACKEND" <<'PY'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
names = {"lstm": "lstm", "lstm-seq": "lstm_seq", "wavenet": "wavenet_simple", "wavenet-gated": "wavenet_gated"}
seq = {"lstm-seq", "wavenet-gated"}

QUIET = 0.1  # at most this share of the CPU used by other processes counts as an idle run

def med(fw, kind, model, key, mode=None):
    """Median over the rounds of one field; only the rounds run on an idle machine when there are
    any (both benchmarks record other_cpu_frac), all rounds otherwise."""
    sel = [r for r in rows if r.get("framework") == fw and r.get("kind") == kind
           and r.get("model") == model and (mode is None or r.get("mode") == mode)]
    quiet = [r for r in sel if (r.get("other_cpu_frac") or 0.0) <= QUIET]
    vals = [r[key] for r in (quiet or sel) if r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")

backend = sys.argv[2].upper()
print(f"\nTraining, {backend}, B=128 T=128 V=300 (medians over rounds)\n")
print("| model | etude ms/step | torch ms/step | etude windows/s | torch windows/s | etude tokens/s | torch tokens/s | etude GFLOP/s | torch GFLOP/s | ratio etude/torch | other CPU (etude / torch) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for m, t in names.items():
    key = "targets_per_s" if m in seq else "windows_per_s"
    e_ms, t_ms = med("etude", "train", m, "step_ms_median"), med("torch", "train", t, "step_ms_median")
    e_w, t_w = med("etude", "train", m, "windows_per_s"), med("torch", "train", t, "windows_per_s")
    e_k, t_k = med("etude", "train", m, "targets_per_s"), med("torch", "train", t, "targets_per_s")
    e_g, t_g = med("etude", "train", m, "achieved_gflops"), med("torch", "train", t, "achieved_gflops")
    ratio = med("etude", "train", m, key) / med("torch", "train", t, key)
    e_o, t_o = med("etude", "train", m, "other_cpu_frac"), med("torch", "train", t, "other_cpu_frac")
    print(f"| {m} | {e_ms:.1f} | {t_ms:.1f} | {e_w:.1f} | {t_w:.1f} | {e_k:.0f} | {t_k:.0f} | {e_g:.1f} | {t_g:.1f} | {ratio:.2f} ({key}) | {e_o:.2f} / {t_o:.2f} |")

print("\nother CPU = share of the cores other processes used during the timed steps (0 = idle machine),")
print(f"median over the rounds with at most {QUIET} (over all rounds when none was that quiet: then the")
print("numbers are not comparable with idle-machine ones; rerun with more ROUNDS).")
print(f"\nGeneration, {backend}, batch 1, ms per token (mean; ratio = torch ms / etude ms, > 1: etude faster)\n")
print("| model | mode (etude / torch) | etude ms | torch ms | ratio |")
print("|---|---|---|---|---|")
for m, em, tm in [("lstm", "incremental", "stateful"), ("lstm", "sliding_window", "full_window"),
                  ("wavenet", "sliding_window", "full_window")]:
    e = med("etude", "generate", m, "ms_per_token_mean", em)
    t = med("torch", "generate", names[m], "ms_per_token_mean", tm)
    print(f"| {m} | {em} / {tm} | {e:.3f} | {t:.3f} | {t / e:.2f} |")
PY
