"""The near-miss guard: a semantic candidate above the threshold is still
refused when the two prompts differ in a way that changes the answer while
leaving the sentence embedding almost unchanged (all-MiniLM-L6-v2 puts "safe"
and "unsafe", "chapter 1" and "chapter 2", "string to integer" and "integer
to string" above 0.97):

- a number differs (digits, or number words and ordinals);
- a negation is added or dropped (not, no, never, n't, without, ...);
- a word is the other's negation or opposite by prefix (safe / unsafe,
  enable / disable, encrypt / decrypt, increase / decrease);
- opposite particles (on / off, in / out, up / down);
- the same two words swap sides of a directional word ("X to Y" / "Y to X");
- a content word was replaced by one whose own embedding is far from it
  (Paris / London, high / low): ``substitution`` returns the two sides, and
  the caller compares their embeddings with ``WORD_THRESHOLD``.

Words only added or dropped ("exactly", "briefly", "in simple terms") pass.
These rules were written while reading the labelled set in
tests/python/data/cache_pairs.tsv; docs/cache.md reports them on a held-out
set too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WORD_THRESHOLD = 0.7  # cosine the replaced and replacing words need

STOP = frozenset(
    "a an the is are was were be been do does did i me my you your we our it its of at to "
    "for from with by and or what's whats what which who whom whose how why when where can "
    "could should would will shall tell give explain please this that these those there "
    "their as about into exactly briefly simple terms way kind in on".split()
)
NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy "
    "eighty ninety hundred thousand million billion first second third fourth fifth sixth "
    "seventh eighth ninth tenth half quarter double twice triple".split()
)
NEGATIONS = frozenset({"not", "no", "never", "without", "cannot", "nor", "none", "nothing"})
NEGATING_PREFIXES = ("anti", "dis", "non", "un", "in", "im", "de", "en")
DIRECTIONAL = frozenset({"to", "into", "from", "than", "versus", "vs"})
OPPOSITE_PARTICLES = ({"on", "off"}, {"in", "out"}, {"up", "down"})
WORD = re.compile(r"[a-z]+|\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class Verdict:
    refused: str | None = None  # why the candidate may not serve
    substitution: tuple[str, str] | None = None  # words to compare before it may


def words(text: str) -> list[str]:
    return WORD.findall(text.lower().replace("n't", " not"))


def singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def root(word: str) -> str:
    for prefix in NEGATING_PREFIXES:
        if word.startswith(prefix) and len(word) - len(prefix) >= 3:
            return word[len(prefix) :]
    return word


def directed_pairs(ws: list[str]) -> set[tuple[str, str, str]]:
    """(directional word, the content word before it, the one after it)."""
    out = set()
    for i, w in enumerate(ws):
        if w in DIRECTIONAL and 0 < i < len(ws) - 1:
            left = [x for x in ws[:i] if x not in STOP]
            right = [x for x in ws[i + 1 :] if x not in STOP]
            if left and right:
                out.add((w, singular(left[-1]), singular(right[0])))
    return out


def judge(cached: str, later: str) -> Verdict:
    wx, wy = words(cached), words(later)
    numbers_x = sorted(w for w in wx if w[0].isdigit() or w in NUMBER_WORDS)
    numbers_y = sorted(w for w in wy if w[0].isdigit() or w in NUMBER_WORDS)
    if numbers_x != numbers_y:
        return Verdict("a number differs")
    if sum(w in NEGATIONS for w in wx) != sum(w in NEGATIONS for w in wy):
        return Verdict("a negation differs")
    pairs_y = directed_pairs(wy)
    if any((d, b, a) in pairs_y and a != b for d, a, b in directed_pairs(wx)):
        return Verdict("two words swap sides")
    particles_x, particles_y = set(wx), set(wy)
    for opposite in OPPOSITE_PARTICLES:
        if opposite <= particles_x | particles_y and (particles_x & opposite) != (
            particles_y & opposite
        ):
            return Verdict("opposite particles")
    content_x = {singular(w) for w in wx if w not in STOP}
    content_y = {singular(w) for w in wy if w not in STOP}
    only_x, only_y = content_x - content_y, content_y - content_x
    if any(root(a) == root(b) and a != b for a in only_x for b in only_y):
        return Verdict("a word is the other's opposite by prefix")
    if only_x and only_y:
        return Verdict(substitution=(" ".join(sorted(only_x)), " ".join(sorted(only_y))))
    return Verdict()
