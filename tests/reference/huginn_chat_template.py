"""Renders Huginn-0125's chat layout with Jinja2, independently of Recur, for ChatTemplateTests.

Writes tests/fixtures/chat/huginn-template.json: a Jinja template with the layout of the one the released
tomg-group-umd/huginn-0125 tokenizer carries (written for this project: BOS before the first header; a
`<|begin_header|>ROLE<|end_header|>\n\n` header per message, assistant turns named "Huginn"; the trimmed content and
`<|end_turn|>`; then the `Huginn` header when a generation prompt is asked for, else `<|end_text|>`), a variant that
writes every role verbatim and closes with nothing (the layout of an earlier Huginn template), and their renderings
of a few conversations.

The environment is set up as transformers' apply_chat_template sets up its own: a sandboxed environment with
trim_blocks and lstrip_blocks, `{% generation %}` blocks rendered as their body, and bos_token / eos_token /
add_generation_prompt passed as variables.

    apt-get install python3-jinja2
    /usr/bin/python3 tests/reference/huginn_chat_template.py [--upstream PATH]

With --upstream PATH (a file holding the template text of the released tokenizer_config.json, e.g. copied out of
seal-rg/recurrent-pretraining's evaluate_raven/checkpoint_to_hf_converter.py) it also asserts that this project's
template renders every conversation exactly as the upstream text does. The upstream text is not committed.
"""
import argparse
import json
import os

from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationBlock(Extension):
    """`{% generation %}…{% endgeneration %}`: transformers marks assistant tokens with it; the text is the body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.Scope(body).set_lineno(lineno)


# This project's template with Huginn's layout.
HUGINN = (
    "{%- for m in messages -%}"
    "{%- if loop.first %}{{ bos_token }}{% endif -%}"
    "{%- if m['role'] == 'assistant' or m['role'] == 'Huginn' %}{% set who = 'Huginn' %}{% else %}{% set who = m['role'] %}{% endif -%}"
    "{{ '<|begin_header|>' + who + '<|end_header|>\\n\\n' }}"
    "{%- if who == 'Huginn' %}{% generation %}{{ (m['content'] | trim) + '<|end_turn|>' }}{% endgeneration %}"
    "{%- else %}{{ (m['content'] | trim) + '<|end_turn|>' }}{% endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}{{ '<|begin_header|>Huginn<|end_header|>\\n\\n' }}{% else %}{{ '<|end_text|>' }}{% endif -%}"
)

# The earlier layout: roles verbatim, nothing after the last turn without a generation prompt.
HUGINN_VERBATIM = (
    "{%- for m in messages -%}"
    "{%- if loop.index0 == 0 %}{{ bos_token }}{% endif -%}"
    "{{ '<|begin_header|>' + m['role'] + '<|end_header|>\\n\\n' + (m['content'] | trim) + '<|end_turn|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}{{ '<|begin_header|>Huginn<|end_header|>\\n\\n' }}{% endif -%}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "  What is 2+2?\n"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "\u00a0Hello there\t"},
        {"role": "assistant", "content": " Hello! \n"},
        {"role": "user", "content": "Line one\nline two"},
    ],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    [],
]

BOS, EOS = "<|begin_text|>", "<|end_text|>"


def render(env, template, messages, gen):
    return env.from_string(template).render(messages=messages, add_generation_prompt=gen, bos_token=BOS, eos_token=EOS)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upstream", help="file with the released template's text (not committed)")
    args = ap.parse_args()
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock])
    cases = []
    for messages in CONVERSATIONS:
        for gen in (True, False):
            cases.append({
                "messages": messages,
                "add_generation_prompt": gen,
                "huginn": render(env, HUGINN, messages, gen),
                "huginn_verbatim": render(env, HUGINN_VERBATIM, messages, gen),
            })
    if args.upstream:
        upstream = open(args.upstream, encoding="utf-8").read()
        for c in cases:
            assert render(env, upstream, c["messages"], c["add_generation_prompt"]) == c["huginn"], c
        print(f"upstream template: all {len(cases)} renderings equal")
    out = os.path.join(os.path.dirname(__file__), "..", "fixtures", "chat", "huginn-template.json")
    doc = {"bos_token": BOS, "eos_token": EOS, "templates": {"huginn": HUGINN, "huginn_verbatim": HUGINN_VERBATIM}, "cases": cases}
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {os.path.normpath(out)}: {len(cases)} renderings")


if __name__ == "__main__":
    main()
