#!/usr/bin/env bash
# Two etude binaries side by side: `etude bench train` for each model and backend, the OLD and the
# NEW binary one after the other (their order swapped every round), so that both see the same
# machine load. Prints each run's median step time, then per model and backend the median over
# rounds of each side and the ratio new/old (< 1: the new binary is faster), and the dispatches
# per step where the backend counts them.
#
# Usage: OLD=/path/to/old/etude NEW=target/release/etude benches/ab_train.sh
# Environment: MODELS ("lstm lstm-seq wavenet wavenet-gated"), BACKENDS ("cpu gpu"), ROUNDS (3),
# STEPS (5), WARMUP (1), BATCH (32), WINDOW (64), OUT (the raw JSON lines; default a temp file).
set -euo pipefail

OLD=${OLD:?set OLD to the baseline etude binary}
NEW=${NEW:?set NEW to the etude binary under test}
MODELS=${MODELS:-lstm lstm-seq wavenet wavenet-gated}
BACKENDS=${BACKENDS:-cpu gpu}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-1}
BATCH=${BATCH:-32}
WINDOW=${WINDOW:-64}
OUT=${OUT:-$(mktemp /tmp/etude-ab.XXXXXX.jsonl)}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

run() { # side binary backend model
    local line
    line=$("$2" bench train --model "$4" --backend "$3" --batch "$BATCH" --window "$WINDOW" \
        --steps "$STEPS" --warmup "$WARMUP" --json)
    echo "{\"side\":\"$1\",\"round\":$round,\"report\":$line}" >>"$OUT"
    python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("%-3s %-3s %-14s %9.1f ms/step  dispatches/step %s" % (sys.argv[2], r["backend"], r["model"], r["step_ms_median"], r.get("dispatches_per_step")))' "$line" "$1"
}

for round in $(seq 1 "$ROUNDS"); do
    for backend in $BACKENDS; do
        for model in $MODELS; do
            if [ $((round % 2)) -eq 1 ]; then
                run old "$OLD" "$backend" "$model"; run new "$NEW" "$backend" "$model"
            else
                run new "$NEW" "$backend" "$model"; run old "$OLD" "$backend" "$model"
            fi
        done
    done
done

python3 - "$OUT" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
keys = sorted({(r["report"]["backend"], r["report"]["model"]) for r in runs})
print(f"\n{'backend':7} {'model':14} {'old ms':>9} {'new ms':>9} {'new/old':>8}  dispatches old -> new")
for backend, model in keys:
    side = lambda s: [r["report"] for r in runs if r["side"] == s and (r["report"]["backend"], r["report"]["model"]) == (backend, model)]
    old, new = side("old"), side("new")
    mo, mn = statistics.median(r["step_ms_median"] for r in old), statistics.median(r["step_ms_median"] for r in new)
    d = lambda rs: rs[0].get("dispatches_per_step")
    print(f"{backend:7} {model:14} {mo:9.1f} {mn:9.1f} {mn / mo:8.3f}  {d(old)} -> {d(new)}")
print(f"(raw runs: {sys.argv[1]})")
EOF
