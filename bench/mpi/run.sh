#!/usr/bin/env bash
# MPI benchmark: all-reduce bandwidth of a C program against Recur's MpiGradientSync on the same sizes, then
# training throughput of the smoke recipe (scaled up) on 1 and 2 ranks. Needs mpich and libmpich-dev.
#   bench/mpi/run.sh [sizes in MiB, default "16 64 256"]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$root/bench/out/mpi"
mkdir -p "$out"
sizes="${*:-16 64 256}"
ranks=2

echo "## all-reduce, $ranks ranks on one node (MiB; GB/s = buffer bytes / seconds per call)"
mpicc -O2 -o "$out/allreduce" "$root/bench/mpi/allreduce.c"
reference="$(mpiexec -n $ranks "$out/allreduce" $sizes | awk '{printf "%s%s:%s", sep, $1, $2; sep=","}')"
dotnet build "$root/bench/Recur.Bench" -c Release --nologo -v q >/dev/null
bench="$root/bench/Recur.Bench/bin/Release/net10.0/linux-x64/Recur.Bench"
mpiexec -n $ranks "$bench" allreduce --threads 1 --sizes-mb "${sizes// /,}" --reference "$reference"

echo
echo "## training throughput: smoke recipe scaled up (global batch 16 × 256 tokens), tokens/s, median of steps 3–12"
recur="$root/recur"
"$recur" --help >/dev/null   # build before launching ranks
common=(--recipe "$root/recipes/smoke.json" --force --set steps=12 --set seq_len=256 --set val_every=0 --set checkpoint_every=0 --set log_every=1 --set optimizer=adamw)
median() { python3 -c "import json,statistics,sys; m=[json.loads(l) for l in open(sys.argv[1])]; print(round(statistics.median(x['tokens_per_second'] for x in m[2:])))" "$1/metrics.jsonl"; }
"$recur" train "${common[@]}" --set micro_batch=16 --set threads=1 --out "$out/train-1x1" >/dev/null
"$recur" train "${common[@]}" --set micro_batch=16 --set threads=2 --out "$out/train-1x2" >/dev/null
mpiexec -n 2 "$recur" train "${common[@]}" --set micro_batch=8 --set threads=1 --out "$out/train-2x1" >/dev/null
t11=$(median "$out/train-1x1"); t12=$(median "$out/train-1x2"); t21=$(median "$out/train-2x1")
echo "| layout | tokens/s | ÷ 1 rank × 1 thread |"
echo "|---|---|---|"
echo "| 1 rank × 1 thread | $t11 | 1.00 |"
echo "| 1 rank × 2 threads | $t12 | $(python3 -c "print(f'{$t12/$t11:.2f}')") |"
echo "| 2 ranks × 1 thread | $t21 | $(python3 -c "print(f'{$t21/$t11:.2f}')") |"
