#!/usr/bin/env python3
"""Builds tests/fixtures/tasks/hendrycks_math_equivalence.jsonl: lm-evaluation-harness's hendrycks_math score of
each (model output, gold) case, by calling the harness's own process_results.

Usage: hendrycks_math_table.py LM_EVAL_HENDRYCKS_UTILS_PY CASES_JSONL OUT_JSONL
(LM_EVAL_HENDRYCKS_UTILS_PY is lm_eval/tasks/hendrycks_math/utils.py; the cases are those of minerva_math_cases.py.)
"""
import importlib.util
import json
import sys
import types


def main():
    utils_path, cases_path, out_path = sys.argv[1:4]
    ds = types.ModuleType("datasets")
    ds.Dataset = object
    sys.modules.setdefault("datasets", ds)
    spec = importlib.util.spec_from_file_location("hendrycks_utils", utils_path)
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    with open(cases_path, encoding="utf-8") as f, open(out_path, "w", encoding="utf-8") as out:
        for line in f:
            case = json.loads(line)
            doc = {"solution": "$\\boxed{" + case["gold_boxed"] + "}$"}
            result = utils.process_results(doc, [case["output"]])
            out.write(json.dumps({"output": case["output"], "gold": case["gold_boxed"], "exact_match": result["exact_match"]}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
