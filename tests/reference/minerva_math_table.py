#!/usr/bin/env python3
"""Builds tests/fixtures/tasks/minerva_math_equivalence.jsonl: for each (model output, gold) case, what
lm-evaluation-harness's minerva_math scoring gives, by running the harness's own functions.

Usage: minerva_math_table.py LM_EVAL_UTILS_PY CASES_JSONL OUT_JSONL [ANTLR_PARSER_DIR]

LM_EVAL_UTILS_PY is lm_eval/tasks/minerva_math/utils.py of an lm-evaluation-harness checkout. CASES_JSONL has
{"output": ..., "gold_boxed": ...} per line. The harness needs sympy >= 1.12 with antlr4-python3-runtime 4.11;
when only another ANTLR runtime is installed, pass ANTLR_PARSER_DIR holding LaTeXLexer.py / LaTeXParser.py
generated from sympy's own LaTeX.g4 with a matching ANTLR tool: they replace sympy's generated parser, and the
runtime version checks are bypassed. Nothing of the harness or sympy is copied here.
"""
import importlib.util
import importlib.metadata
import json
import sys
import types


def main():
    utils_path, cases_path, out_path = sys.argv[1:4]
    parser_dir = sys.argv[4] if len(sys.argv) > 4 else None
    if parser_dir:
        real_version = importlib.metadata.version
        importlib.metadata.version = lambda name: "4.11.1" if name == "antlr4-python3-runtime" else real_version(name)
        sys.path.insert(0, parser_dir)
        import LaTeXLexer
        import LaTeXParser
        lexmod = types.ModuleType("sympy.parsing.latex._antlr.latexlexer")
        lexmod.LaTeXLexer = LaTeXLexer.LaTeXLexer
        parmod = types.ModuleType("sympy.parsing.latex._antlr.latexparser")
        parmod.LaTeXParser = LaTeXParser.LaTeXParser
        sys.modules[lexmod.__name__] = lexmod
        sys.modules[parmod.__name__] = parmod
    # The harness module imports these for other metrics; scoring exact_match does not use them.
    ds = types.ModuleType("datasets")
    ds.Dataset = object
    sys.modules.setdefault("datasets", ds)
    mv = types.ModuleType("math_verify")
    mv.parse = mv.verify = lambda *a, **k: None
    sys.modules["math_verify"] = mv

    spec = importlib.util.spec_from_file_location("minerva_utils", utils_path)
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    import sympy
    from sympy.parsing.latex import parse_latex

    def parses(s):
        try:
            parse_latex(s)
            return True
        except Exception:
            return False

    with open(cases_path, encoding="utf-8") as f, open(out_path, "w", encoding="utf-8") as out:
        for line in f:
            case = json.loads(line)
            gold = utils.normalize_final_answer(case["gold_boxed"])
            raw = utils.get_unnormalized_answer(case["output"])
            extracted = utils.normalize_final_answer(raw)
            row = {
                "output": case["output"],
                "gold_boxed": case["gold_boxed"],
                "gold": gold,
                "unnormalized": raw,
                "extracted": extracted,
                "equivalent": bool(utils.is_equiv(extracted, gold)),
                "extracted_parses": parses(extracted),
                "sympy": sympy.__version__,
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
