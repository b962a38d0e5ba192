#!/usr/bin/env bash
# Interleaved pairs of Recur's and PyTorch's bf16 training step (bench/RESULTS.md, "Training step"): the host is
# shared and drifts by ±10 % within minutes, so one pair proves little; this prints every pair's ratio and the median.
# Usage: bench/peers/compare_train.sh [pairs=6] [dtype=bf16]   (needs apt python3-torch libopenblas0-pthread)
set -euo pipefail
cd "$(dirname "$0")/../.."
pairs=${1:-6}; dtype=${2:-bf16}
dotnet build -c Release bench/Recur.Bench >/dev/null
bin=bench/Recur.Bench/bin/Release/net10.0/linux-x64/Recur.Bench
only=$([ "$dtype" = bf16 ] && echo --bf16-only || echo --fp32-only)
ratios=()
for i in $(seq "$pairs"); do
  ours=$("$bin" train --steps 4 "$only" | grep "^recur $dtype" | sed -E 's/.*: ([0-9.]+) s\/step.*/\1/')
  theirs=$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 bench/peers/train_step.py --steps 4 --dtype "$dtype" | grep "^pytorch $dtype" | sed -E 's/.*: ([0-9.]+) s\/step.*/\1/')
  r=$(python3 -c "print(f'{$theirs/$ours:.3f}')")
  ratios+=("$r")
  echo "pair $i: recur $ours s/step, pytorch $theirs s/step, speed ratio recur/pytorch $r"
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "median ratio %.3f over %d pairs (min %.3f, max %.3f)\n", m, NR, a[1], a[NR]}'
