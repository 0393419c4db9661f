"""Transcript normalisation for alignment: what an aligner sees of each transcript word, while the
output keeps the transcript's own spelling.

Rules (documented in docs/alignment.md, tested in tests/test_align_text.py):
1. The transcript is split on whitespace; each piece is a *word* of the output, spelled as written.
   A piece that gives no spoken token ("-", "...") is glued to the previous word (to the next one at
   the start), so `" ".join(words) == " ".join(text.split())` always holds.
2. Unicode NFKC, then lower case; curly apostrophes become "'".
3. Numbers as written are spoken forms: "42" -> "forty two", "1990" -> "nineteen ninety",
   "3.5" -> "three point five", "1st"/"2nd"/"23rd" -> ordinals, "1,000" -> "one thousand",
   "%" -> "percent", "&" -> "and", "$5" -> "five dollars" (up to 10^12; longer digit strings are
   read digit by digit).
4. Every other character that is not a letter or an apostrophe inside a word is dropped
   (punctuation, hyphens split compounds: "well-known" -> "well known").
An aligner aligns the spoken tokens and gives each output word the span of its tokens.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def _below_1000(n: int) -> list[str]:
    out = []
    if n >= 100:
        out += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        out.append(_TENS[n // 10])
        n %= 10
        if n:
            out.append(_ONES[n])
    elif n or not out:
        out.append(_ONES[n])
    return out


def number_words(n: int) -> list[str]:
    """Cardinal words of 0 <= n < 10^12: 1234 -> one thousand two hundred thirty four."""
    if n < 1000:
        return _below_1000(n)
    out = []
    for scale, name in _SCALES:
        if n >= scale:
            out += _below_1000(n // scale) + [name]
            n %= scale
    return out + (_below_1000(n) if n else [])


def _year_words(n: int) -> list[str]:
    hi, lo = divmod(n, 100)
    if lo == 0:
        return _below_1000(hi) + ["hundred"]
    return _below_1000(hi) + (["oh"] + _ONES[lo : lo + 1] if lo < 10 else _below_1000(lo))


def ordinal_words(n: int) -> list[str]:
    w = number_words(n)
    last = w[-1]
    if last in _ORDINAL:
        w[-1] = _ORDINAL[last]
    elif last.endswith("y"):
        w[-1] = last[:-1] + "ieth"
    else:
        w[-1] = last + "th"
    return w


def _digits(s: str) -> list[str]:
    return [_ONES[int(c)] for c in s]


def _spell_number(tok: str) -> list[str]:
    """Spoken words of one numeric token ("42", "3.5", "1,000", "1990", "2nd")."""
    m = re.fullmatch(r"(\d+)(st|nd|rd|th)", tok)
    if m:
        return ordinal_words(int(m.group(1)))
    if re.fullmatch(r"\d{1,3}(,\d{3})+", tok):
        tok = tok.replace(",", "")
    elif "," in tok:  # "9,9": not a thousands group, two numbers
        return [w for part in tok.split(",") if part for w in _spell_number(part)]
    if "." in tok:
        whole, _, frac = tok.partition(".")
        return (_spell_number(whole) if whole else []) + ["point"] + _digits(frac)
    if len(tok) > 12 or (len(tok) > 1 and tok.startswith("0")):
        return _digits(tok)
    n = int(tok)
    if len(tok) == 4 and 1100 <= n <= 2099 and n % 1000 >= 10 and not 2000 <= n <= 2009:
        return _year_words(n)
    return number_words(n)


_PIECE = re.compile(r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?|[^\W\d_]+(?:'[^\W\d_]+)*|[%&$]")


def spoken_tokens(word: str) -> list[str]:
    """The lower-case spoken tokens of one transcript word (rules 2-4 above)."""
    w = unicodedata.normalize("NFKC", word).lower().replace("\u2019", "'").replace("\u2018", "'")
    out: list[str] = []
    dollars = False
    for m in _PIECE.finditer(w):
        p = m.group(0)
        if p == "$":
            dollars = True
        elif p == "%":
            out.append("percent")
        elif p == "&":
            out.append("and")
        elif p[0].isdigit():
            p = p.rstrip(".,") if not re.search(r"\d[.,]\d", p) else p
            out += _spell_number(p)
            if dollars:
                out.append("dollar" if p == "1" else "dollars")
                dollars = False
        else:
            out.append(p)
    return out


@dataclasses.dataclass(frozen=True)
class Word:
    text: str  # as written in the transcript (with glued punctuation)
    tokens: tuple[str, ...]  # spoken tokens, lower case


def transcript_words(text: str) -> list[Word]:
    """The output words of a transcript and the spoken tokens of each (rule 1)."""
    words: list[Word] = []
    pending = ""  # leading pieces without letters or digits
    for piece in text.split():
        toks = tuple(spoken_tokens(piece))
        if not toks:
            if words:
                words[-1] = Word(f"{words[-1].text} {piece}", words[-1].tokens)
            else:
                pending = f"{pending} {piece}".strip()
            continue
        words.append(Word(f"{pending} {piece}".strip(), toks))
        pending = ""
    return words
