using System.Globalization;
using System.Numerics;
using System.Text.RegularExpressions;

namespace Recur.Tasks;

/// <summary>
/// The equivalence test of lm-eval's <c>minerva_math</c> (EleutherAI/lm-evaluation-harness:
/// lm_eval/tasks/minerva_math/utils.py <c>is_equiv</c>): both normalised answers are parsed as LaTeX the way sympy's
/// <c>parse_latex</c> does (its ANTLR grammar, sympy/parsing/latex/LaTeX.g4, and the conversions of
/// <c>_parse_latex_antlr.py</c>), and they are equal when <c>simplify(a - b) == 0</c>. The goal is the harness's number,
/// not the truth: what sympy's parser rejects (intervals, percent, matrices, a bare <c>.5</c>, leading zeros) is
/// "not equal" even between identical strings, and what it accepts oddly (a trailing <c>,5</c> is left unread,
/// <c>\infty</c> never equals itself, <c>e</c> and <c>i</c> are plain symbols) is reproduced.
/// </summary>
/// <remarks>
/// Values: expressions made only of numbers and + − × ÷ and integer powers are compared exactly as rationals;
/// anything else (roots, π, symbols, functions) is evaluated in complex floating point at two fixed assignments
/// of the free symbols and compared with a relative tolerance of 1e-9 — equal values where sympy's simplify
/// proves the difference zero. Infinite or undefined values (division by zero, <c>\infty</c>) are never equal,
/// as <c>nan == 0</c> is false. docs/eval.md lists the measured disagreements with the harness.
/// </remarks>
public static class MathEquivalence
{
    /// <summary>Whether lm-eval's <c>is_equiv</c> would call the two normalised answers equal.</summary>
    public static bool IsEquivalent(string a, string b)
    {
        Node x, y;
        try
        {
            x = Parser.Parse(a);
            y = Parser.Parse(b);
        }
        catch (ParseError) { return false; }
        if (x is Relation || y is Relation) return false; // sympy cannot subtract relations (TypeError)
        // a - a cancels term by term before any value is looked at, so identical expressions are equal even where
        // undefined (1/0 against \frac{1}{0}); only the number oo does not cancel (oo - oo is nan).
        if (x.Key() == y.Key() && !x.Key().Contains("oo", StringComparison.Ordinal)) return true;
        if (Exact(x) is { } ex && Exact(y) is { } ey) return ex.Equals(ey);
        for (int k = 0; k < 2; k++)
        {
            Complex u, v;
            try { u = x.Eval(k); v = y.Eval(k); }
            catch (EvalError) { return false; }
            if (!Finite(u) || !Finite(v)) return false;
            double scale = Math.Max(1.0, Math.Max(Complex.Abs(u), Complex.Abs(v)));
            if (Complex.Abs(u - v) > 1e-9 * scale) return false;
        }
        return true;
    }

    /// <summary>Whether sympy's <c>parse_latex</c> accepts the string (the harness treats a rejection as "not equal").</summary>
    public static bool Parses(string s)
    {
        try { Parser.Parse(s); return true; }
        catch (ParseError) { return false; }
    }

    static bool Finite(Complex c) => double.IsFinite(c.Real) && double.IsFinite(c.Imaginary);

    static Rational? Exact(Node n)
    {
        try { return n.Exact(); }
        catch (EvalError) { return null; }
    }

    // ---- exact rationals ------------------------------------------------------------------------

    readonly record struct Rational(BigInteger P, BigInteger Q)
    {
        public static Rational Of(BigInteger p, BigInteger q)
        {
            if (q.IsZero) throw new EvalError();
            if (q.Sign < 0) { p = -p; q = -q; }
            var g = BigInteger.GreatestCommonDivisor(p, q);
            return g.IsOne || g.IsZero ? new Rational(p, q) : new Rational(p / g, q / g);
        }
        public static Rational operator +(Rational a, Rational b) => Of(a.P * b.Q + b.P * a.Q, a.Q * b.Q);
        public static Rational operator -(Rational a, Rational b) => Of(a.P * b.Q - b.P * a.Q, a.Q * b.Q);
        public static Rational operator *(Rational a, Rational b) => Of(a.P * b.P, a.Q * b.Q);
        public static Rational operator /(Rational a, Rational b) => Of(a.P * b.Q, a.Q * b.P);
        public Complex ToComplex() => new((double)P / (double)Q, 0);
    }

    sealed class EvalError : Exception;

    sealed class ParseError(string message) : Exception(message);

    // ---- expression tree ------------------------------------------------------------------------

    abstract class Node
    {
        /// <summary>The exact rational value, or EvalError when the node is not a rational expression.</summary>
        public virtual Rational Exact() => throw new EvalError();
        /// <summary>The value at assignment <paramref name="k"/> of the free symbols.</summary>
        public abstract Complex Eval(int k);
        /// <summary>The structure, for telling identical expressions apart from merely equal ones.</summary>
        public abstract string Key();
    }

    sealed class Num(Rational value) : Node
    {
        public override Rational Exact() => value;
        public override Complex Eval(int k) => value.ToComplex();
        public override string Key() => $"{value.P}/{value.Q}";
    }

    sealed class Const(Complex value, string name) : Node
    {
        public override Complex Eval(int k) => value;
        public override string Key() => name;
    }

    /// <summary>A free symbol: a fixed pseudo-random value per name and assignment (distinct names, distinct values).</summary>
    sealed class Sym(string name) : Node
    {
        public override Complex Eval(int k) => new(0.5 + Hash(name, k), 0);
        public override string Key() => "'" + name + "'";
    }

    /// <summary>An undefined function f(args): a fixed pseudo-random function of its name and argument values.</summary>
    sealed class Apply(string name, IReadOnlyList<Node> args) : Node
    {
        public override Complex Eval(int k)
        {
            Complex acc = new(Hash(name, k), 0);
            for (int i = 0; i < args.Count; i++) acc += Complex.Sin(args[i].Eval(k) * (1.3 + i) + Hash(name, k + 7));
            return acc;
        }

        public override string Key() => name + "(" + string.Join(",", args.Select(a => a.Key())) + ")";
    }

    sealed class Bin(char op, Node a, Node b) : Node
    {
        public override string Key() => "(" + a.Key() + op + b.Key() + ")";

        public override Rational Exact()
        {
            var x = a.Exact();
            if (op == '^')
            {
                var e = b.Exact();
                if (!e.Q.IsOne || BigInteger.Abs(e.P) > 4096) throw new EvalError();
                int n = (int)e.P;
                if (n < 0 && x.P.IsZero) throw new EvalError();
                var r = Rational.Of(BigInteger.Pow(x.P, Math.Abs(n)), BigInteger.Pow(x.Q, Math.Abs(n)));
                return n >= 0 ? r : Rational.Of(r.Q, r.P);
            }
            var y = b.Exact();
            return op switch { '+' => x + y, '-' => x - y, '*' => x * y, '/' => x / y, _ => throw new EvalError() };
        }

        public override Complex Eval(int k)
        {
            var x = a.Eval(k);
            var y = b.Eval(k);
            return op switch
            {
                '+' => x + y,
                '-' => x - y,
                '*' => x * y,
                '/' => y == Complex.Zero ? new Complex(double.NaN, double.NaN) : x / y,
                '^' => Power(x, y),
                _ => throw new EvalError(),
            };
        }

        /// <summary>Principal power, exact for integer exponents of real bases; 0^negative is complex infinity.</summary>
        static Complex Power(Complex x, Complex y)
        {
            if (y.Imaginary == 0 && Math.Abs(y.Real - Math.Round(y.Real)) == 0 && Math.Abs(y.Real) <= 4096)
            {
                int n = (int)y.Real;
                if (x == Complex.Zero) return n < 0 ? new Complex(double.NaN, double.NaN) : n == 0 ? Complex.One : Complex.Zero;
                Complex r = Complex.One, bpow = x;
                for (int m = Math.Abs(n); m > 0; m >>= 1, bpow *= bpow) if ((m & 1) == 1) r *= bpow;
                return n < 0 ? Complex.One / r : r;
            }
            if (x == Complex.Zero) return y.Real > 0 ? Complex.Zero : new Complex(double.NaN, double.NaN);
            // Real cube roots etc. of negative numbers are principal (complex) values in sympy too.
            return Complex.Pow(x, y);
        }
    }

    sealed class Neg(Node a) : Node
    {
        public override Rational Exact() => Rational.Of(0, 1) - a.Exact();
        public override Complex Eval(int k) => -a.Eval(k);
        public override string Key() => "-" + a.Key();
    }

    sealed class Fn(string name, Node a, Node? b = null) : Node
    {
        public override string Key() => name + "(" + a.Key() + (b is null ? "" : "," + b.Key()) + ")";

        public override Rational Exact()
        {
            if (name != "factorial") throw new EvalError();
            var x = a.Exact();
            if (!x.Q.IsOne || x.P.Sign < 0 || x.P > 200) throw new EvalError();
            BigInteger r = 1;
            for (int i = 2; i <= (int)x.P; i++) r *= i;
            return Rational.Of(r, 1);
        }

        public override Complex Eval(int k)
        {
            var x = a.Eval(k);
            return name switch
            {
                "sqrt" => Complex.Sqrt(x),
                "root" => Complex.Pow(x, Complex.One / b!.Eval(k)),
                "exp" => Complex.Exp(x),
                "log" => b is null ? Complex.Log(x) : Complex.Log(x) / Complex.Log(b.Eval(k)),
                "sin" => Complex.Sin(x),
                "cos" => Complex.Cos(x),
                "tan" => Complex.Tan(x),
                "csc" => 1 / Complex.Sin(x),
                "sec" => 1 / Complex.Cos(x),
                "cot" => 1 / Complex.Tan(x),
                "arcsin" => Complex.Asin(x),
                "arccos" => Complex.Acos(x),
                "arctan" => Complex.Atan(x),
                "arccsc" => Complex.Asin(1 / x),
                "arcsec" => Complex.Acos(1 / x),
                "arccot" => Complex.Atan(1 / x),
                "sinh" => Complex.Sinh(x),
                "cosh" => Complex.Cosh(x),
                "tanh" => Complex.Tanh(x),
                "arsinh" => Complex.Log(x + Complex.Sqrt(x * x + 1)),
                "arcosh" => Complex.Log(x + Complex.Sqrt(x + 1) * Complex.Sqrt(x - 1)),
                "artanh" => 0.5 * Complex.Log((1 + x) / (1 - x)),
                "abs" => new Complex(Complex.Abs(x), 0),
                "floor" => x.Imaginary == 0 ? new Complex(Math.Floor(x.Real), 0) : throw new EvalError(),
                "ceil" => x.Imaginary == 0 ? new Complex(Math.Ceiling(x.Real), 0) : throw new EvalError(),
                "factorial" => Gamma(x + 1),
                "binom" => Binom(x, b!.Eval(k)),
                _ => throw new EvalError(),
            };
        }

        static Complex Gamma(Complex z)
        {
            if (z.Imaginary != 0) throw new EvalError();
            double v = z.Real;
            if (v <= 0 && v == Math.Floor(v)) return new Complex(double.NaN, double.NaN);
            if (v == Math.Floor(v) && v < 171)
            {
                double r = 1;
                for (int i = 2; i < (int)v; i++) r *= i;
                return r;
            }
            throw new EvalError();
        }

        static Complex Binom(Complex n, Complex k)
        {
            if (n.Imaginary != 0 || k.Imaginary != 0 || k.Real != Math.Floor(k.Real) || k.Real < 0) throw new EvalError();
            double r = 1;
            for (int i = 0; i < (int)k.Real; i++) r = r * (n.Real - i) / (i + 1);
            return r;
        }
    }

    sealed class Relation : Node
    {
        public override Complex Eval(int k) => throw new EvalError();
        public override string Key() => "relation";
    }

    static double Hash(string name, int k)
    {
        uint h = 2166136261;
        foreach (char c in name) h = (h ^ c) * 16777619;
        h = (h ^ (uint)(k * 0x9E3779B1)) * 16777619;
        h ^= h >> 13;
        h *= 0x5bd1e995;
        h ^= h >> 15;
        return (h % 1000003) / 1000003.0;
    }

    // ---- lexer: sympy's LaTeX.g4 tokens ------------------------------------------------------

    enum T
    {
        Skip, Add, Sub, Mul, Div, LParen, RParen, LBrace, RBrace, LBraceLit, RBraceLit, LBracket, RBracket, Bar, RBar, LBar,
        LAngle, RAngle, Lim, LimApproach, Int, Sum, Prod, Func, LFloor, RFloor, LCeil, RCeil, Sqrt, Overline, Times, Cdot, CmdDiv,
        Frac, Binom, Mathit, Underscore, Caret, Colon, Differential, Letter, Digit, Equal, Neq, Lt, Lte, Gt, Gte, Bang, Quotes,
        Symbol, Comma, Dot, Eof,
    }

    readonly record struct Token(T Kind, string Text);

    // In LaTeX.g4 order: ANTLR takes the longest match and, among equals, the earliest rule.
    static readonly (Regex Re, T Kind)[] Rules = BuildRules();

    static (Regex, T)[] BuildRules()
    {
        static string Lit(params string[] xs) => "(?:" + string.Join("|", xs.OrderByDescending(x => x.Length).Select(Regex.Escape)) + ")";
        string[] funcs = ["exp", "log", "lg", "ln", "sin", "cos", "tan", "csc", "sec", "cot", "arcsin", "arccos", "arctan", "arccsc", "arcsec",
            "arccot", "sinh", "cosh", "tanh", "arsinh", "arcosh", "artanh"];
        var list = new List<(string, T)>
        {
            (@"[ \t\r\n]+", T.Skip),
            (Lit(@"\,", @"\thinspace"), T.Skip), (Lit(@"\:", @"\medspace"), T.Skip), (Lit(@"\;", @"\thickspace"), T.Skip),
            (Lit(@"\quad"), T.Skip), (Lit(@"\qquad"), T.Skip), (Lit(@"\!", @"\negthinspace"), T.Skip), (Lit(@"\negmedspace"), T.Skip),
            (Lit(@"\negthickspace"), T.Skip), (Lit(@"\left"), T.Skip), (Lit(@"\right"), T.Skip),
            (Lit(@"\vrule", @"\vcenter", @"\vbox", @"\vskip", @"\vspace", @"\hfil", @"\*", @"\-", @"\.", @"\/", "\\\"", @"\(", @"\="), T.Skip),
            (Lit("+"), T.Add), (Lit("-"), T.Sub), (Lit("*"), T.Mul), (Lit("/"), T.Div), (Lit("("), T.LParen), (Lit(")"), T.RParen),
            (Lit("{"), T.LBrace), (Lit("}"), T.RBrace), (Lit(@"\{"), T.LBraceLit), (Lit(@"\}"), T.RBraceLit), (Lit("["), T.LBracket),
            (Lit("]"), T.RBracket), (Lit("|"), T.Bar), (Lit(@"\right|"), T.RBar), (Lit(@"\left|"), T.LBar), (Lit(@"\langle"), T.LAngle),
            (Lit(@"\rangle"), T.RAngle), (Lit(@"\lim"), T.Lim),
            (Lit(@"\to", @"\rightarrow", @"\Rightarrow", @"\longrightarrow", @"\Longrightarrow"), T.LimApproach),
            (Lit(@"\int", @"\int\limits"), T.Int), (Lit(@"\sum"), T.Sum), (Lit(@"\prod"), T.Prod),
        };
        foreach (var f in funcs) list.Add((Lit("\\" + f), T.Func));
        list.AddRange(new (string, T)[]
        {
            (Lit(@"\lfloor"), T.LFloor), (Lit(@"\rfloor"), T.RFloor), (Lit(@"\lceil"), T.LCeil), (Lit(@"\rceil"), T.RCeil),
            (Lit(@"\sqrt"), T.Sqrt), (Lit(@"\overline"), T.Overline), (Lit(@"\times"), T.Times), (Lit(@"\cdot"), T.Cdot), (Lit(@"\div"), T.CmdDiv),
            (Lit(@"\frac", @"\dfrac", @"\tfrac"), T.Frac), (Lit(@"\binom"), T.Binom), (Lit(@"\dbinom"), T.Binom), (Lit(@"\tbinom"), T.Binom),
            (Lit(@"\mathit"), T.Mathit), (Lit("_"), T.Underscore), (Lit("^"), T.Caret), (Lit(":"), T.Colon),
            (@"d[ \t\r\n]*?(?:[a-zA-Z]|\\[a-zA-Z]+)", T.Differential),
            (@"[a-zA-Z]", T.Letter), (@"[0-9]", T.Digit),
            (@"(?:&[ \t\r\n]*?)?=|=(?:[ \t\r\n]*?&)?", T.Equal),
            (Lit(@"\neq"), T.Neq), (Lit("<"), T.Lt), (Lit(@"\leq", @"\le", @"\leqq", @"\leqslant"), T.Lte), (Lit(@"\leqq"), T.Lte), (Lit(@"\leqslant"), T.Lte),
            (Lit(">"), T.Gt), (Lit(@"\geq", @"\ge", @"\geqq", @"\geqslant"), T.Gte), (Lit(@"\geqq"), T.Gte), (Lit(@"\geqslant"), T.Gte),
            (Lit("!"), T.Bang), (@"'+", T.Quotes), (@"\\[a-zA-Z]+", T.Symbol),
            (Lit(","), T.Comma), (Lit("."), T.Dot),
        });
        return list.Select(r => (new Regex(@"\G" + r.Item1, RegexOptions.CultureInvariant), r.Item2)).ToArray();
    }

    /// <summary>Tokens produced on demand, as ANTLR's token stream does: a character no rule matches is an error only once the parser looks at it.</summary>
    sealed class Lexer(string s)
    {
        int _pos;
        readonly List<Token> _tokens = [];
        bool _done;

        public Token At(int i)
        {
            while (_tokens.Count <= i && !_done) Next();
            return i < _tokens.Count ? _tokens[i] : new Token(T.Eof, "");
        }

        void Next()
        {
            while (true)
            {
                if (_pos >= s.Length) { _done = true; return; }
                int best = 0;
                T kind = T.Skip;
                foreach (var (re, k) in Rules)
                {
                    var m = re.Match(s, _pos);
                    // The differential rule's lazy white space: ANTLR's longest match still applies to the whole token.
                    int len = m.Success ? (k == T.Differential ? LongestDifferential(_pos) : m.Length) : 0;
                    if (len > best) { best = len; kind = k; }
                }
                if (best == 0) throw new ParseError($"token recognition error at '{s[_pos]}'");
                var text = s.Substring(_pos, best);
                _pos += best;
                if (kind == T.Skip) continue;
                _tokens.Add(new Token(kind, text));
                return;
            }
        }

        int LongestDifferential(int at)
        {
            int i = at + 1;
            while (i < s.Length && s[i] is ' ' or '\t' or '\r' or '\n') i++;
            if (i >= s.Length) return 0;
            if (char.IsAsciiLetter(s[i])) return i + 1 - at;
            if (s[i] == '\\' && i + 1 < s.Length && char.IsAsciiLetter(s[i + 1]))
            {
                int j = i + 1;
                while (j < s.Length && char.IsAsciiLetter(s[j])) j++;
                return j - at;
            }
            return 0;
        }
    }

    // ---- parser: the rules of LaTeX.g4 that MATH answers reach ---------------------------------

    sealed class Parser
    {
        readonly Lexer _lex;
        int _i;
        int _absDepth;

        Parser(string s) { _lex = new Lexer(s); }

        /// <summary>sympy strips the string, parses <c>math: relation</c> (no EOF: trailing tokens are left unread).</summary>
        public static Node Parse(string s)
        {
            var p = new Parser(s.Trim());
            if (p.Peek().Kind == T.Eof) throw new ParseError("empty");
            return p.Relation();
        }

        Token Peek(int k = 0) => _lex.At(_i + k);
        Token Take() => _lex.At(_i++);

        Token Expect(T kind)
        {
            var t = Peek();
            if (t.Kind != kind) throw new ParseError($"expected {kind}, found '{t.Text}'");
            _i++;
            return t;
        }

        Node Relation()
        {
            var left = Expr();
            bool rel = false;
            while (Peek().Kind is T.Equal or T.Lt or T.Lte or T.Gt or T.Gte or T.Neq)
            {
                Take();
                Expr();
                rel = true;
            }
            return rel ? new Relation() : left;
        }

        Node Expr() => Additive();

        Node Additive()
        {
            var left = Mp(true);
            while (Peek().Kind is T.Add or T.Sub)
            {
                char op = Take().Kind == T.Add ? '+' : '-';
                left = new Bin(op, left, Mp(true));
            }
            return left;
        }

        Node Mp(bool funcs)
        {
            var left = Unary(funcs);
            while (Peek().Kind is T.Mul or T.Times or T.Cdot or T.Div or T.CmdDiv or T.Colon)
            {
                char op = Take().Kind is T.Mul or T.Times or T.Cdot ? '*' : '/';
                left = new Bin(op, left, Unary(funcs));
            }
            return left;
        }

        Node Unary(bool funcs)
        {
            var t = Peek().Kind;
            if (t == T.Add) { Take(); return Unary(funcs); }
            if (t == T.Sub) { Take(); return new Neg(Unary(funcs)); }
            // unary: postfix+ (implicit multiplication); unary_nofunc: postfix postfix_nofunc*.
            var result = Postfix(true);
            while (StartsPostfix(funcs)) result = new Bin('*', result, Postfix(funcs));
            return result;
        }

        bool StartsPostfix(bool funcs) => Peek().Kind switch
        {
            // Inside |…| a bar closes the group (ANTLR sees that another |…| could not be completed).
            T.Bar => _absDepth == 0,
            T.LParen or T.LBracket or T.LBrace or T.LBraceLit or T.LBar or T.LFloor or T.LCeil or T.Letter or T.Symbol or T.Digit
                or T.Differential or T.Mathit or T.Frac or T.Binom or T.LAngle => true,
            T.Func or T.Sqrt or T.Overline or T.Int or T.Sum or T.Prod or T.Lim => funcs,
            _ => false,
        };

        Node Postfix(bool funcs)
        {
            var e = Exp(funcs);
            while (Peek().Kind == T.Bang) { Take(); e = new Fn("factorial", e); }
            return e;
        }

        Node Exp(bool funcs)
        {
            var b = Comp(funcs);
            while (Peek().Kind == T.Caret)
            {
                Take();
                Node e = Peek().Kind == T.LBrace ? Braced() : Atom();
                if (Peek().Kind == T.Underscore) SubExpr();
                b = new Bin('^', b, e);
            }
            return b;
        }

        Node Braced()
        {
            Expect(T.LBrace);
            var e = Expr();
            Expect(T.RBrace);
            return e;
        }

        Node Comp(bool funcs)
        {
            switch (Peek().Kind)
            {
                case T.LParen: Take(); { var e = Expr(); Expect(T.RParen); return e; }
                case T.LBracket: Take(); { var e = Expr(); Expect(T.RBracket); return e; }
                case T.LBrace: return Braced();
                case T.LBraceLit: Take(); { var e = Expr(); Expect(T.RBraceLit); return e; }
                case T.Bar:
                {
                    Take();
                    _absDepth++;
                    var e = Expr();
                    _absDepth--;
                    Expect(T.Bar);
                    return new Fn("abs", e);
                }
                case T.LFloor: Take(); { var e = Expr(); Expect(T.RFloor); return new Fn("floor", e); }
                case T.LCeil: Take(); { var e = Expr(); Expect(T.RCeil); return new Fn("ceil", e); }
            }
            if (funcs && Peek().Kind is T.Func or T.Sqrt or T.Overline or T.Int or T.Sum or T.Prod or T.Lim) return Func();
            // f(x): a letter or symbol (with optional subscript / primes) directly followed by '(' args ')'.
            if (funcs && Peek().Kind is T.Letter or T.Symbol && NameEnd() is int end && _lex.At(end).Kind == T.LParen)
            {
                var name = NameAtom(out _);
                Expect(T.LParen);
                var args = new List<Node> { Expr() };
                while (Peek().Kind == T.Comma) { Take(); args.Add(Expr()); }
                Expect(T.RParen);
                return new Apply(name, args);
            }
            return Atom();
        }

        /// <summary>The token index after a LETTER/SYMBOL atom's optional subscript and primes (to tell f(x) from f·(x)).</summary>
        int? NameEnd()
        {
            int j = _i + 1;
            for (int pass = 0; pass < 2; pass++)
            {
                if (_lex.At(j).Kind == T.Quotes) { j++; continue; }
                if (_lex.At(j).Kind == T.Underscore)
                {
                    j++;
                    if (_lex.At(j).Kind != T.LBrace) { j++; continue; }
                    int depth = 0;
                    do
                    {
                        var k = _lex.At(j).Kind;
                        if (k == T.Eof) return null;
                        if (k == T.LBrace) depth++;
                        if (k == T.RBrace) depth--;
                        j++;
                    } while (depth > 0);
                }
            }
            return j;
        }

        Node Func()
        {
            var t = Take();
            switch (t.Kind)
            {
                case T.Sqrt:
                {
                    Node? root = null;
                    if (Peek().Kind == T.LBracket) { Take(); root = Expr(); Expect(T.RBracket); }
                    var bse = Braced();
                    return root is null ? new Fn("sqrt", bse) : new Fn("root", bse, root);
                }
                case T.Overline:
                    Braced();
                    throw new ParseError("overline"); // sympy has no value for it in MATH answers
                case T.Func:
                {
                    var name = t.Text[1..];
                    Node? sub = null, sup = null;
                    for (int pass = 0; pass < 2; pass++)
                    {
                        if (Peek().Kind == T.Underscore && sub is null) { Take(); sub = ScriptBeforeArgument(); }
                        else if (Peek().Kind == T.Caret && sup is null) { Take(); sup = ScriptBeforeArgument(); }
                    }
                    Node arg;
                    if (Peek().Kind == T.LParen)
                    {
                        Take();
                        arg = Expr();
                        if (Peek().Kind == T.Comma) throw new ParseError("several arguments");
                        Expect(T.RParen);
                    }
                    else arg = Mp(false);
                    Node f = name switch
                    {
                        "log" or "ln" => sub is not null ? new Fn("log", arg, sub) : new Fn("log", arg),
                        "lg" => new Fn("log", arg, new Num(Rational.Of(10, 1))),
                        _ => new Fn(name, arg),
                    };
                    // \sin^2 x is sin(x)^2; \sin^{-1} x is asin(x).
                    if (sup is not null)
                    {
                        if (sup is Num n && n.Exact() == Rational.Of(-1, 1) && name is "sin" or "cos" or "tan" or "csc" or "sec" or "cot" or "sinh" or "cosh" or "tanh")
                            return new Fn((name.EndsWith('h') ? "ar" : "arc") + name, arg);
                        f = new Bin('^', f, sup);
                    }
                    return f;
                }
                default:
                    throw new ParseError($"unsupported '{t.Text}'");
            }
        }

        /// <summary>
        /// A function's sub/superscript: \log_24 is log base 2 of 4, since ANTLR's full-context prediction stops the
        /// digit run where the function would be left without an argument.
        /// </summary>
        Node ScriptBeforeArgument()
        {
            if (Peek().Kind != T.Digit) return Peek().Kind == T.LBrace ? Braced() : Atom();
            int run = 0;
            while (Peek(run).Kind == T.Digit) run++;
            bool argumentFollows = Peek(run).Kind is not (T.Eof or T.RParen or T.RBrace or T.RBracket or T.Add or T.Sub or T.Equal or T.Comma);
            return argumentFollows || run == 1 ? Number() : Digit();
        }

        Node SubExpr()
        {
            Expect(T.Underscore);
            return Peek().Kind == T.LBrace ? Braced() : Atom();
        }

        string SubText()
        {
            int start = _i;
            SubExpr();
            var parts = new List<string>();
            for (int j = start + 1; j < _i; j++) parts.Add(_lex.At(j).Text);
            return string.Concat(parts);
        }

        string NameAtom(out bool isSymbol)
        {
            var t = Take();
            isSymbol = t.Kind == T.Symbol;
            var name = isSymbol ? t.Text[1..] : t.Text;
            for (int pass = 0; pass < 2; pass++)
            {
                if (Peek().Kind == T.Underscore) name += "_{" + SubText().Trim('{', '}') + "}";
                else if (Peek().Kind == T.Quotes) name += Take().Text;
            }
            return name;
        }

        Node Atom()
        {
            var t = Peek();
            switch (t.Kind)
            {
                case T.Letter:
                    return new Sym(NameAtom(out _));
                case T.Symbol:
                {
                    if (t.Text == @"\infty") { Take(); return new Const(new Complex(double.PositiveInfinity, 0), "oo"); }
                    if (t.Text == @"\pi") { Take(); return new Const(new Complex(Math.PI, 0), "pi"); }
                    return new Sym("\\" + NameAtom(out _));
                }
                case T.Digit:
                    return Number();
                case T.Differential:
                    Take();
                    return new Sym("d:" + t.Text);
                case T.Mathit:
                {
                    Take();
                    Expect(T.LBrace);
                    var name = "";
                    while (Peek().Kind == T.Letter) name += Take().Text;
                    Expect(T.RBrace);
                    return new Sym(name);
                }
                case T.Frac:
                {
                    Take();
                    Node top = Peek().Kind == T.Digit ? Digit() : Braced();
                    Node bottom = Peek().Kind == T.Digit ? Digit() : Braced();
                    return new Bin('/', top, bottom);
                }
                case T.Binom:
                {
                    Take();
                    var n = Braced();
                    var k = Braced();
                    return new Fn("binom", n, k);
                }
                default:
                    throw new ParseError($"unexpected '{t.Text}'");
            }
        }

        Node Digit() => new Num(Rational.Of(int.Parse(Take().Text, CultureInfo.InvariantCulture), 1));

        /// <summary>
        /// number: DIGIT+ (',' DIGIT DIGIT DIGIT)* ('.' DIGIT+)?, converted by sympy's <c>Number(text without commas)</c>,
        /// which rejects an integer part with a leading zero (Python syntax) and reads decimals exactly enough that
        /// 0.5 − 1/2 simplifies to 0.
        /// </summary>
        Node Number()
        {
            var digits = "";
            while (Peek().Kind == T.Digit) digits += Take().Text;
            while (Peek().Kind == T.Comma && Peek(1).Kind == T.Digit && Peek(2).Kind == T.Digit && Peek(3).Kind == T.Digit)
            {
                Take();
                digits += Take().Text + Take().Text + Take().Text;
            }
            var frac = "";
            if (Peek().Kind == T.Dot)
            {
                Take();
                if (Peek().Kind != T.Digit) throw new ParseError("a decimal point needs digits after it");
                while (Peek().Kind == T.Digit) frac += Take().Text;
            }
            if (frac.Length == 0 && digits.Length > 1 && digits[0] == '0' && digits.Any(c => c != '0')) throw new ParseError("leading zero");
            return new Num(Rational.Of(BigInteger.Parse(digits + frac, CultureInfo.InvariantCulture), BigInteger.Pow(10, frac.Length)));
        }
    }
}
