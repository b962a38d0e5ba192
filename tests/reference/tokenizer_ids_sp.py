"""SentencePiece half of the tokenizer reference fixtures (called by tokenizer_ids.mjs).

Reads {"model": path, "texts": [...]} as JSON on stdin and prints the fixture block for that
tokenizer.model on stdout. It reproduces what Hugging Face's slow, legacy `LlamaTokenizer`
(and `LlamaTokenizerFast` built from the same model) return:

* `tokenizer(text)` = [BOS] + ids; `add_special_tokens=False` drops the BOS; no EOS.
* The special tokens <unk>, <s>, </s> written literally in the text are matched as added tokens
  (HF splits the text on them before SentencePiece runs); every remaining piece of text is
  encoded on its own, so each gets SentencePiece's dummy-prefix "▁" (that is the "legacy"
  behaviour).
* decode(skip_special_tokens=True) = SentencePiece decode of the ids without control tokens
  (HF's slow tokenizer drops the special ids and lets SentencePiece decode the rest).

Run with a Python where `import sentencepiece` works, e.g. /usr/bin/python3 on Debian
(python3-sentencepiece). Only ids are printed, never model data.
"""
import json
import re
import sys

import sentencepiece as spm


def main() -> None:
    req = json.load(sys.stdin)
    sp = spm.SentencePieceProcessor(model_file=req["model"])
    specials = {sp.id_to_piece(i): i for i in (sp.unk_id(), sp.bos_id(), sp.eos_id()) if i >= 0}
    # Longest first so that a special token never loses to one of its own prefixes.
    splitter = re.compile("(" + "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)) + ")")

    def encode(text: str) -> list[int]:
        ids: list[int] = []
        for part in splitter.split(text):
            if part == "":
                continue
            if part in specials:
                ids.append(specials[part])
            else:
                ids.extend(sp.encode(part))
        return ids

    control = {i for i in range(sp.get_piece_size()) if sp.is_control(i)}
    cases = []
    for text in req["texts"]:
        plain = encode(text)
        with_bos = [sp.bos_id()] + plain
        tail = plain[len(plain) // 2:]
        cases.append({
            "text": text,
            "ids": with_bos,
            "ids_no_special": plain,
            "decoded": sp.decode([i for i in with_bos if i not in control]),
            # The second half of the ids on its own (see tokenizer_ids.mjs).
            "tail_ids": tail,
            "tail_decoded": sp.decode([i for i in tail if i not in control]),
        })
    json.dump({
        "reference": f"sentencepiece (python) {spm.__version__}, HF slow legacy LlamaTokenizer rules",
        "vocab_size": sp.get_piece_size(),
        "cases": cases,
    }, sys.stdout, ensure_ascii=False)


if __name__ == "__main__":
    main()
