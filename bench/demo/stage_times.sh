#!/usr/bin/env bash
# Demo stage times, before against after (bench/RESULTS.md, "Demo time budget (issue 13)"): alternates two builds of
# `recur demo` on a short configuration and prints each run's seconds per training step of every stage (from the
# stages' metrics.jsonl) and the scoring time, then the per-stage medians and after ÷ before ratios. The host is
# shared, so only ratios of interleaved runs mean anything.
# Usage: bench/demo/stage_times.sh BEFORE_CLI AFTER_CLI [rounds=3] [config.json] [threads=2]
#   (a CLI is a built src/Recur.Cli/bin/Release/net10.0/linux-x64/Recur.Cli of each tree)
set -euo pipefail
before=$1; after=$2; rounds=${3:-3}; config=${4:-}; threads=${5:-2}
out=$(mktemp -d /tmp/demo-stage-times.XXXX)
if [ -z "$config" ]; then
  config=$out/config.json
  # The default run's data, model and recipe, with fewer steps and test problems.
  echo '{"pretrain_steps": 12, "recurrent_steps": 12, "test_per_k": 10}' > "$config"
fi
for i in $(seq "$rounds"); do
  for which in before after; do
    bin=$before; [ "$which" = after ] && bin=$after
    "$bin" demo --config "$config" --out "$out/$which-$i" --threads "$threads" > "$out/$which-$i.log" 2>&1
    echo "$which $i done, load $(cut -d' ' -f1-3 /proc/loadavg)"
  done
done
python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
stages = ["base", "baseline", "recurrent", "random-init"]
def run(d):
    r = {}
    for s in stages:
        rows = [json.loads(l) for l in open(f"{d}/{s}/metrics.jsonl")]
        # Step 1 includes one-time start-up (first allocations); the rest are steady-state steps.
        r[s] = (rows[-1]["elapsed_seconds"] - rows[0]["elapsed_seconds"]) / (len(rows) - 1)
    res = json.load(open(f"{d}/results.json"))
    r["data+scoring"] = res["wall_seconds"] - sum(m["wall_seconds"] for m in res["models"])
    return r
data = {w: [run(f"{out}/{w}-{i}") for i in range(1, rounds + 1)] for w in ("before", "after")}
keys = stages + ["data+scoring"]
for i in range(rounds):
    print(f"round {i+1}: " + ", ".join(f"{k} {data['before'][i][k]:.3f}→{data['after'][i][k]:.3f}" for k in keys))
print("| stage | before (median) | after (median) | after ÷ before, per round | median ratio |")
print("|---|---|---|---|---|")
for k in keys:
    b = [x[k] for x in data["before"]]; a = [x[k] for x in data["after"]]
    ratios = [y / x for x, y in zip(b, a)]
    unit = "s/step" if k in stages else "s"
    print(f"| {k} | {statistics.median(b):.3f} {unit} | {statistics.median(a):.3f} {unit} | {' '.join(f'{r:.3f}' for r in ratios)} | {statistics.median(ratios):.3f} |")
def strip(o):
    if isinstance(o, dict): return {k: strip(v) for k, v in o.items() if k not in ("date", "machine", "wall_seconds")}
    if isinstance(o, list): return [strip(v) for v in o]
    return o
ref = strip(json.load(open(f"{out}/before-1/results.json")))
same = all(strip(json.load(open(f"{out}/{w}-{i}/results.json"))) == ref for w in ("before", "after") for i in range(1, rounds + 1))
print("results.json of every run equal apart from date, machine and wall_seconds:", same)
PY
echo "runs in $out"
