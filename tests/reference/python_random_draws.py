"""Writes tests/fixtures/tasks/python_random_draws.json: what CPython's random.Random(seed) gives for
getrandbits and for successive sample(range(n), k) calls on one generator (lm-eval's few-shot sampler draws
this way, lm_eval/api/samplers.py). Stdlib only; run with python3 >= 3.11 from the repository root."""
import json
import random
import sys

cases = []
for seed in [0, 1, 1234, 42, 2**32 + 7, 2**40 + 123456789]:
    r = random.Random(seed)
    bits = [r.getrandbits(k) for k in [1, 5, 13, 31, 32, 32, 7]]
    for n, k, calls in [(1, 1, 3), (8, 5, 4), (30, 5, 4), (21, 6, 3), (60, 6, 3), (7473, 5, 5), (7473, 8, 3), (3, 3, 2), (10, 2, 4)]:
        r = random.Random(seed)
        draws = [r.sample(range(n), k) for _ in range(calls)]
        cases.append({"seed": seed, "n": n, "k": k, "draws": draws})
    cases.append({"seed": seed, "getrandbits": [1, 5, 13, 31, 32, 32, 7], "values": bits})
json.dump({"python": sys.version.split()[0], "cases": cases}, open("tests/fixtures/tasks/python_random_draws.json", "w"), indent=0)
