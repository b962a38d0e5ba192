#!/usr/bin/env bash
# Decode rate of `recur generate` on its libtorch-free path against the libtorch path of the same build
# (RECUR_TORCH_FREE=1|0), interleaved: the closing line's tok/s for 256 new tokens after the prompt "O", greedy, 1 thread,
# on random stories-shaped models made by `recur init`. Usage: bench/torchfree/decode_paths.sh [RECUR_CLI] [ROUNDS]
# (RECUR_CLI: a built Recur.Cli, default the repository's ReadyToRun publish; the shared SentencePiece tokenizer is read
# from ../shared).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${1:-$root/src/Recur.Cli/bin/Release/net10.0/linux-x64/publish/Recur.Cli}"
rounds="${2:-3}"
tok="$root/../shared/tokenizers/llama2-sentencepiece/tokenizer.model"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
"$bin" init --preset stories15m --out "$dir/s15-fp32" >/dev/null
"$bin" init --preset stories15m --out "$dir/s15-bf16" --save-dtype bf16 >/dev/null
"$bin" init --preset stories110m --out "$dir/s110-bf16" --save-dtype bf16 >/dev/null
for round in $(seq "$rounds"); do
  for m in "s15-fp32 fp32" "s15-bf16 bf16" "s110-bf16 bf16"; do
    set -- $m
    for free in 1 0; do
      line=$(RECUR_TORCH_FREE=$free OMP_NUM_THREADS=1 "$bin" generate --model "$dir/$1" --tokenizer "$tok" --prompt O \
        --max-new-tokens 256 --threads 1 --dtype "$2" 2>&1 >/dev/null | grep 'tok/s')
      echo "round $round $1 RECUR_TORCH_FREE=$free $line"
    done
  done
done
