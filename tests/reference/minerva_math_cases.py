#!/usr/bin/env python3
"""Writes the (output, gold) cases that minerva_math_table.py scores with lm-evaluation-harness: MATH-style gold
answers, each against equivalent rewrites, near misses and forms the harness's parser rejects, wrapped in the
Minerva final-answer sentence (and a few outputs without it). Deterministic. Usage: minerva_math_cases.py OUT_JSONL"""
import json
import random
import sys
from math import gcd

# gold -> candidate answers (as a model would write them inside the final-answer sentence)
GROUPS = {
    "5": ["5", "5.0", "05", "+5", "5.00", "\\frac{10}{2}", "10/2", "4", "-5", "5\\%", "5^\\circ", "5\\text{ cm}", "\\$5", "5.", "x=5", "\\boxed{5}", "{5}", "(5)", "5!", "\\sqrt{25}", "five"],
    "120": ["5!", "120", "1,20", "12\\cdot 10", "12 \\times 10", "2^3\\cdot 15", "119", "\\dfrac{240}{2}"],
    "1000000": ["1,000,000", "1000000", "10^6", "1{,}000{,}000", "1\\,000\\,000", "1 000 000", "1,000,00", "999999"],
    "\\frac{1}{2}": ["1/2", "\\frac12", "\\dfrac{1}{2}", "\\tfrac{1}{2}", "0.5", ".5", "0.50", "\\frac{2}{4}", "2^{-1}", "\\frac{1}{3}", "1:2", "\\frac{1}{2}"],
    "-\\frac{2}{3}": ["-\\frac{2}{3}", "\\frac{-2}{3}", "\\frac{2}{-3}", "-2/3", "-0.6667", "-\\frac23", "\\frac{2}{3}", "-0.\\overline{6}"],
    "2\\sqrt{2}": ["\\sqrt{8}", "2\\sqrt2", "2 \\sqrt{2}", "\\sqrt{2}\\cdot 2", "2^{3/2}", "2.828", "\\sqrt{2}", "2\\sqrt{2}", "8^{1/2}", "\\frac{4}{\\sqrt{2}}"],
    "\\frac{\\sqrt{3}}{2}": ["\\frac{\\sqrt3}{2}", "\\frac{1}{2}\\sqrt{3}", "\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}", "\\sqrt{\\frac{3}{4}}", "\\frac{3}{2\\sqrt{3}}", "0.866", "\\frac{\\sqrt{2}}{2}"],
    "3\\pi": ["3\\pi", "\\pi \\cdot 3", "3 \\pi", "9.42", "\\frac{6\\pi}{2}", "3pi", "3\\pi^1", "\\pi"],
    "\\frac{\\pi}{4}": ["\\pi/4", "\\frac14\\pi", "0.25\\pi", "45^\\circ", "45", "\\frac{\\pi}{4}", "\\tfrac{\\pi}{4}"],
    "10\\%": ["10\\%", "10", "0.1", "10 percent", "\\frac{1}{10}", "10%"],
    "[2,5)": ["[2,5)", "[2, 5)", "2\\le x<5", "(2,5)", "[2,5]"],
    "(1,2)": ["(1,2)", "(1, 2)", "1,2", "(2,1)", "\\left(1,2\\right)"],
    "(-\\infty,3]": ["(-\\infty,3]", "(-\\infty, 3]", "x\\le 3", "\\infty"],
    "\\infty": ["\\infty", "oo", "\\infinity"],
    "x^2+2x+1": ["(x+1)^2", "x^2+2x+1", "x^{2}+2x+1", "1+2x+x^2", "x^2+2x", "(x+1)(x+1)", "x\\cdot x+2x+1"],
    "3x-2": ["3x-2", "-2+3x", "3 x - 2", "3(x-\\frac{2}{3})", "3x+2", "x3-2"],
    "\\frac{x+1}{x-1}": ["\\frac{x+1}{x-1}", "(x+1)/(x-1)", "\\frac{1+x}{x-1}", "\\frac{-x-1}{1-x}", "\\frac{x-1}{x+1}"],
    "a+b": ["a+b", "b+a", "a + b", "ab", "a-b"],
    "\\text{(C)}": ["\\text{(C)}", "(C)", "C", "\\text{C}", "(D)", "\\textbf{(C)}"],
    "\\text{Evelyn}": ["\\text{Evelyn}", "Evelyn", "evelyn", "Eve"],
    "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}": ["\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(1,2)"],
    "\\frac{1}{0}": ["\\frac{1}{0}", "1/0", "\\infty"],
    "0": ["0", "-0", "0.0", "00", "\\frac{0}{5}", "1-1", "\\emptyset"],
    "-1": ["-1", "- 1", "-1.0", "\\frac{-3}{3}", "1", "i^2", "(-1)"],
    "2": ["2", "\\sqrt{4}", "\\log_2 4", "\\log_{2}{4}", "2^1", "\\binom{2}{1}", "\\lfloor 2.5 \\rfloor", "\\lceil 1.5 \\rceil", "|-2|", "\\left|-2\\right|", "4^{\\frac12}", "\\sqrt[3]{8}", "e^{\\ln 2}"],
    "15": ["15", "\\binom{6}{2}", "\\dbinom{6}{4}", "3\\cdot5", "3\\times5", "30\\div2", "15.0", "0015", "15\\text{ degrees}", "15^{\\circ}", "15\\text{ units}", "15 \\mbox{ inches}", "\\$15", "15\\text{ dollars}", "15\\text{ ways}", "16"],
    "1.5": ["1.5", "\\frac{3}{2}", "1\\frac{1}{2}", "3/2", "1.50", "\\frac32", "1\\tfrac12"],
    "\\sqrt{2}+\\sqrt{3}": ["\\sqrt{3}+\\sqrt{2}", "\\sqrt2+\\sqrt3", "\\sqrt{5}", "\\sqrt{2}+\\sqrt{3}", "3.146"],
    "4\\sqrt{3}-6": ["-6+4\\sqrt{3}", "2(2\\sqrt{3}-3)", "4\\sqrt3-6", "\\sqrt{48}-6", "0.928"],
    "\\frac{7}{9}": ["0.\\overline{7}", "\\frac{14}{18}", "7/9", "0.777", "\\frac{7}{9}"],
    "x=3": ["3", "x=3", "x = 3", "y=3", "3=x"],
    "y = 2x + 3": ["2x+3", "y=2x+3", "3+2x", "y=3+2x"],
    "x < 3": ["x<3", "x < 3", "3 > x", "x\\le3"],
    "6,7": ["6,7", "6, 7", "7,6", "6\\text{ and }7", "6 \\text{and} 7"],
    "2, -2": ["2,-2", "-2,2", "\\pm 2", "2"],
    "\\sin x": ["\\sin x", "\\sin(x)", "\\cos(\\frac{\\pi}{2}-x)", "\\sin{x}"],
    "\\frac{1}{4}\\sin^2 x": ["\\frac{\\sin^2x}{4}", "\\frac14 \\sin^2 x"],
    "e": ["e", "\\exp(1)", "e^1", "2.718"],
    "i": ["i", "\\sqrt{-1}", "-i"],
    "1+2i": ["1+2i", "2i+1", "1 + 2 i", "1-2i"],
    "\\frac{9}{4}": ["2.25", "2\\frac14", "\\frac{9}{4}", "\\left(\\frac{3}{2}\\right)^2", "(3/2)^2"],
    "1\\frac{1}{2}": ["1\\frac{1}{2}", "\\frac{3}{2}", "1.5"],
    "12": ["12", "12\\text{ inches}", "\\text{12}", "\\mathbf{12}", "12\\,\\text{cm}^2", "12 \\text{ square units}", "12\\text{ sq ft}", "{12}", "\\boxed{12}", "12\\text{ km}"],
    "2^{10}": ["1024", "2^10", "4^5", "2^{10}", "1,024", "32^2"],
    "3^{\\frac{1}{3}}": ["\\sqrt[3]{3}", "3^{1/3}", "\\root 3 \\of 3"],
    "\\$1.25": ["1.25", "\\$1.25", "\\$ 1.25", "125\\text{ cents}", "1.25\\text{ dollars}"],
    "100": ["100", "10^2", "1e2", "1.0e2", "100.", "99.999", "\\frac{1000}{10}"],
    "\\text{east}": ["\\text{east}", "east", "East", "\\text{ East}"],
    "\\text{odd}": ["odd", "\\text{odd}", "\\text{even}"],
    "4, 6, 14, 15": ["4,6,14,15", "4, 6, 14, 15", "15,14,6,4"],
    "\\{1, 2\\}": ["\\{1,2\\}", "\\{2,1\\}", "1,2"],
    "\\pm \\sqrt{3}": ["\\pm\\sqrt3", "\\sqrt{3}, -\\sqrt{3}", "\\pm \\sqrt{3}"],
    "xy": ["yx", "xy", "x\\cdot y", "x y"],
    "f(x)": ["f(x)", "f(y)"],
    "\\angle ABC": ["\\angle ABC", "ABC"],
    "\\overline{AB}": ["AB", "\\overline{AB}", "BA"],
    "10^{-3}": ["0.001", "10^{-3}", "\\frac{1}{1000}", "1/1000"],
}

OUTPUT_FORMS = [
    "Final Answer: The final answer is ${}$. I hope it is correct.",
    "So the result follows.\nFinal Answer: The final answer is {}. I hope it is correct.",
]


def generated():
    """Seeded families in the shapes MATH answers take: fractions, decimals, radicals, π multiples, polynomials,
    each gold against equal and unequal rewrites."""
    rnd = random.Random(14)
    out = []

    def add(gold, cands):
        for i, c in enumerate(cands):
            form = OUTPUT_FORMS[i % len(OUTPUT_FORMS)]
            out.append({"output": form.replace("{}", c), "gold_boxed": gold})

    for _ in range(40):
        q = rnd.randint(2, 40)
        p = rnd.randint(1, 3 * q)
        g = gcd(p, q)
        p, q = p // g, q // g
        if q == 1:
            continue
        sign = rnd.choice(["", "-"])
        k = rnd.randint(2, 5)
        add(f"{sign}\\frac{{{p}}}{{{q}}}", [
            f"{sign}{p}/{q}", f"{sign}\\dfrac{{{p * k}}}{{{q * k}}}", f"\\frac{{{sign}{p}}}{{{q}}}",
            f"{sign}{p / q:.4f}", f"{sign}\\frac{{{p + 1}}}{{{q}}}", f"{sign}{p}:{q}",
            f"{sign}\\frac{{{q}}}{{{p}}}", f"{sign}\\tfrac{p}{q}" if p < 10 and q < 10 else f"{sign}{p}\\div{q}",
        ])
    for _ in range(30):
        a, m = rnd.randint(1, 9), rnd.choice([2, 3, 5, 6, 7, 10, 11])
        add(f"{a}\\sqrt{{{m}}}", [
            f"\\sqrt{{{a * a * m}}}", f"{a}\\sqrt{m}", f"\\sqrt{{{m}}}\\cdot {a}", f"{a}\\sqrt{{{m + 1}}}",
            f"\\frac{{{a * m}}}{{\\sqrt{{{m}}}}}", f"{a}*{m}^{{1/2}}", f"{(a * m ** 0.5):.3f}", f"{a + 1}\\sqrt{{{m}}}",
        ])
    for _ in range(20):
        a, b = rnd.randint(1, 9), rnd.randint(1, 9)
        add(f"{a}\\pi", [f"{a}\\pi", f"\\pi{a}", f"\\frac{{{a * b}\\pi}}{{{b}}}", f"{a * 3.14159:.4f}", f"{a + b}\\pi", f"{a}\\cdot\\pi"])
    for _ in range(25):
        a, b = rnd.randint(-9, 9), rnd.randint(-9, 9)
        gold = f"x^2{a + b:+d}x{a * b:+d}"
        add(gold, [f"(x{a:+d})(x{b:+d})", f"x^2{a + b:+d}x{a * b:+d}", f"x^{{2}}{a + b:+d}x{a * b:+d}",
                   f"(x{a:+d})(x{b + 1:+d})", f"{a * b}{a + b:+d}x+x^2", f"x^2{a + b:+d}x"])
    for _ in range(40):
        n = rnd.randint(0, 10 ** rnd.randint(1, 7))
        with_commas = f"{n:,}"
        add(str(n), [with_commas, str(n), f"{n}.0", str(n + 1), f"+{n}", f"{n}\\text{{ units}}", f"\\${with_commas}",
                     f"0{n}", f"{n}\\%", f"{n}^\\circ"])
    for _ in range(20):
        d = round(rnd.uniform(0, 100), rnd.randint(1, 3))
        add(str(d), [str(d), f"{d}0", f".{str(d).split('.')[1]}" if d < 1 else f"{d:.2f}", str(round(d + 0.1, 3)), f"\\frac{{{int(round(d * 1000))}}}{{1000}}"])
    return out


def main():
    cases = []
    for gold, cands in GROUPS.items():
        for i, c in enumerate(cands):
            form = OUTPUT_FORMS[i % len(OUTPUT_FORMS)] if "$" not in c else OUTPUT_FORMS[1]
            cases.append({"output": form.replace("{}", c), "gold_boxed": gold})
    # Extraction edge cases: no sentence, the sentence cut before its end, two sentences, a period inside.
    extras = [
        ("The answer is $\\boxed{5}$.", "5"),
        ("Final Answer: The final answer is $5$", "5"),
        ("Final Answer: The final answer is 5", "5"),
        ("Final Answer: The final answer is $3$. I hope it is correct.\nFinal Answer: The final answer is $5$. I hope it is correct.", "5"),
        ("Final Answer: The final answer is $3.5$. I hope it is correct.", "3.5"),
        ("Final Answer: The final answer is $a = 2, b = 3$. I hope it is correct.", "3"),
        ("Final Answer: The final answer is $\\$ 12$. I hope it is correct.", "12"),
        ("Final Answer: The final answer is an integer $7$. I hope it is correct.", "7"),
        ("Final Answer: The final answer is a $7$. I hope it is correct.", "7"),
        ("Final Answer: The final answer is $7$ and $8$. I hope it is correct.", "7"),
        ("Final Answer: The final answer is \\boxed{\\frac{1}{2}}. I hope it is correct.", "\\frac{1}{2}"),
        ("Final Answer: The final answer is \\(\\frac{1}{2}\\). I hope it is correct.", "\\frac{1}{2}"),
        ("Final Answer: The final answer is $\\fbox{5}$. I hope it is correct.", "5"),
        ("final answer: the final answer is $5$. I hope it is correct.", "5"),
        ("Final Answer: The final answer is $$. I hope it is correct.", "0"),
        ("Final Answer: The final answer is . I hope it is correct.", "5"),
    ]
    cases += [{"output": o, "gold_boxed": g} for o, g in extras]
    cases += generated()
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        for c in cases:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
