#!/bin/bash
# Issue 30's table: N pieces one by one against one batch, CPU then lavapipe.
E=${E:-target/release/etude}
uptime
for m in lstm lstm-seq transformer; do $E bench generate --model $m --count 64 --tokens 40 --incremental 2>&1 | grep pieces; done
for m in transformer; do for c in 8 16 32; do $E bench generate --model $m --count $c --tokens 40 --incremental 2>&1 | grep pieces; done; done
for m in wavenet wavenet-gated lstm transformer; do $E bench generate --model $m --count 16 --tokens 8 --sliding-window 2>&1 | grep pieces; done
uptime
for m in lstm transformer; do $E bench generate --model $m --count 16 --tokens 10 --incremental --backend gpu 2>&1 | grep pieces; done
for m in wavenet; do $E bench generate --model $m --count 16 --tokens 4 --sliding-window --backend gpu 2>&1 | grep pieces; done
uptime
