#!/usr/bin/env bash
# etude's GPU backend vs burn 0.22 (wgpu backend) on the same adapter, measured in one run,
# alternating (issue 7: "at least 3x faster per training step than burn on lavapipe").
#
# For each of ROUNDS rounds and each model (lstm, lstm-seq) it runs `etude bench train --backend
# gpu` and then burn-bench (../shared/peers/burn-bench) with --backend wgpu for the same model,
# batch (128) and window (128), one after the other so that both see the same machine load. burn
# needs its first steps for shader compilation and autotuning, so it gets BURN_WARMUP (3) warm-up
# steps and etude WARMUP (1); both time STEPS (3) steps. Then it prints the medians and the
# ratios burn ms/step over etude ms/step (> 1: etude is faster).
#
# Needs: the burn-bench crate (BURN_BENCH, default ../shared/peers/burn-bench relative to the repo,
# else /work/shared/peers/burn-bench), built in a copy under /tmp (its own folder may be read-only)
# with CARGO_TARGET_DIR=${BURN_TARGET:-/tmp/burn-target}: the first build downloads burn 0.22.1 and
# takes ~30 min on 2 cores; a Vulkan driver (lavapipe: apt-get install mesa-vulkan-drivers).
# Environment: ROUNDS (1), STEPS (3), WARMUP (1), BURN_WARMUP (3), DEVICE (etude --device),
# OUT (the raw JSON lines; default a temporary file).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
ROUNDS=${ROUNDS:-1}
STEPS=${STEPS:-3}
WARMUP=${WARMUP:-1}
BURN_WARMUP=${BURN_WARMUP:-3}
BURN_TARGET=${BURN_TARGET:-/tmp/burn-target}
OUT=${OUT:-$(mktemp /tmp/etude-burn.XXXXXX.jsonl)}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}   # silences Mesa's device-select layer

if [ -z "${BURN_BENCH:-}" ]; then
    for d in "$here/../shared/peers/burn-bench" /work/shared/peers/burn-bench; do
        if [ -f "$d/Cargo.toml" ]; then BURN_BENCH=$d; break; fi
    done
fi
if [ -z "${BURN_BENCH:-}" ] || [ ! -f "$BURN_BENCH/Cargo.toml" ]; then
    echo "compare_burn.sh: burn-bench not found: set BURN_BENCH to the burn-bench crate" \
         "(../shared/peers/burn-bench: burn 0.22.1, wgpu + ndarray, its README says how it measures)" >&2
    exit 2
fi
if [ "$STEPS" -lt 1 ] || [ "$BURN_WARMUP" -lt 2 ]; then
    echo "compare_burn.sh: needs STEPS >= 1 and BURN_WARMUP >= 2 (burn's first two steps compile and autotune)" >&2
    exit 2
fi

# burn-bench is built in a writable copy (cargo writes Cargo.lock beside the manifest).
copy=/tmp/burn-bench-src
mkdir -p "$copy"
cp -r "$BURN_BENCH/Cargo.toml" "$BURN_BENCH/Cargo.lock" "$BURN_BENCH/src" "$copy/"
chmod -R u+w "$copy"
echo "building burn-bench in $copy (CARGO_TARGET_DIR=$BURN_TARGET; the first build takes ~30 min)" >&2
(cd "$copy" && CARGO_TARGET_DIR="$BURN_TARGET" cargo build --release --quiet)
burn=$BURN_TARGET/release/burn-bench
cargo build --release --quiet
etude=$here/target/release/etude
dev=()
if [ -n "${DEVICE:-}" ]; then dev=(--device "$DEVICE"); fi

: > "$OUT"
echo "raw results: $OUT ($ROUNDS rounds; etude $WARMUP + $STEPS steps, burn $BURN_WARMUP + $STEPS steps)" >&2
for round in $(seq 1 "$ROUNDS"); do
    for model in lstm lstm-seq; do
        burn_name=${model//-/_}
        echo "round $round: $model (etude gpu, then burn wgpu)" >&2
        "$etude" bench train --model "$model" --backend gpu "${dev[@]}" --batch 128 --window 128 --vocab 300 \
            --steps "$STEPS" --warmup "$WARMUP" --json >> "$OUT"
        "$burn" --backend wgpu --model "$burn_name" --batch 128 --warmup "$BURN_WARMUP" --steps "$STEPS" \
            --wait-quiet 0 >> "$OUT"
    done
done

python3 - "$OUT" <<'PY'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]

def med(fw, model, key):
    vals = [r[key] for r in rows if r.get("framework") == fw and r.get("model") == model and r.get(key) is not None]
    return statistics.median(vals) if vals else float("nan")

dev = next((r.get("device") for r in rows if r.get("framework") == "etude"), "?")
burn_dev = next((r.get("backend_detail") for r in rows if r.get("framework") == "burn"), "?")
print(f"\nTraining step, B=128 T=128 V=300; etude gpu on {dev}; burn {burn_dev}\n")
print("| model | etude ms/step | burn ms/step | etude windows/s | burn windows/s | ratio burn/etude | other CPU (etude / burn) |")
print("|---|---|---|---|---|---|---|")
for m, b in [("lstm", "lstm"), ("lstm-seq", "lstm_seq")]:
    e, t = med("etude", m, "step_ms_median"), med("burn", b, "step_ms_median")
    ew, tw = med("etude", m, "windows_per_s"), med("burn", b, "windows_per_s")
    eo, to = med("etude", m, "other_cpu_frac"), med("burn", b, "other_cpu_frac")
    print(f"| {m} | {e:.0f} | {t:.0f} | {ew:.2f} | {tw:.2f} | {t / e:.2f} | {eo:.2f} / {to:.2f} |")
print("\nratio > 1: etude is faster. other CPU = share of the cores other processes used during the")
print("timed steps (0 = idle machine); compare runs only when both are small.")
PY
