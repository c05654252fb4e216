"""The near-miss guard: a semantic candidate above the threshold is still
refused when the two prompts differ in a way that changes the answer while
leaving the sentence embedding almost unchanged (all-MiniLM-L6-v2 puts "safe"
and "unsafe", "chapter 1" and "chapter 2", "string to integer" and "integer
to string" above 0.97):

- a number differs (digits, or number words and ordinals);
- a negation is added or dropped (not, no, never, n't, without, ...);
- a word is the other's opposite: by prefix (safe / unsafe, legal /
  illegal, encrypt / decrypt, import / export), by suffix (careful /
  careless), or as a common antonym (largest / smallest, before / after:
  cache/opposites.py);
- opposite particles (on / off, in / out, up / down);
- words swap sides of a directional word ("X to Y" / "Y to X", also when
  one side is a phrase: "a PDF to Word" / "a Word document to PDF");
- a name was replaced by another (a capitalized word, or one with capitals
  inside, that is not the first of its sentence: Paris / Lyon, iPhone /
  iPad, CPU / GPU);
- a content word was replaced by one whose own embedding is far from it
  (cake / bread): ``substitution`` returns the two sides, and the caller
  compares their embeddings with ``WORD_THRESHOLD``.

Words only added or dropped ("exactly", "briefly", "in simple terms") pass.
The first rules were written while reading the labelled set in
tests/python/data/cache_pairs.tsv, the second revision (il-/ir-, phrase
swaps, names, antonyms) after the first held-out set showed two misses;
docs/cache.md reports all three sets, the last written before that revision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelbench.cache.opposites import ANTONYMS, NEGATING_PREFIXES, OPPOSITE_SUFFIXES

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
DIRECTIONAL = frozenset({"to", "into", "from", "than", "versus", "vs"})
OPPOSITE_PARTICLES = ({"on", "off"}, {"in", "out"}, {"up", "down"})
WORD = re.compile(r"[a-z]+|\d+(?:[.,]\d+)*")
CASED_WORD = re.compile(r"[A-Za-z]+|[.!?]")


@dataclass(frozen=True)
class Verdict:
    refused: str | None = None  # why the candidate may not serve
    substitution: tuple[str, str] | None = None  # words to compare before it may


def words(text: str) -> list[str]:
    return WORD.findall(text.lower().replace("n't", " not"))


def names(text: str) -> set[str]:
    """Capitalized words (or with capitals inside) not first in their sentence, lower-cased."""
    out, first = set(), True
    for token in CASED_WORD.findall(text):
        if token in ".!?":
            first = True
            continue
        if (not first and token[0].isupper()) or any(c.isupper() for c in token[1:]):
            out.add(singular(token.lower()))
        first = False
    return out


def singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def opposite(a: str, b: str) -> str | None:
    """How two different words are each other's opposite, if they are."""
    if frozenset((a, b)) in ANTONYMS:
        return "antonym"
    stems_a = {(p, a[len(p) :]) for p in ("", *NEGATING_PREFIXES) if a.startswith(p)}
    stems_b = {(p, b[len(p) :]) for p in ("", *NEGATING_PREFIXES) if b.startswith(p)}
    if any(pa != pb and ra == rb and len(ra) >= 3 for pa, ra in stems_a for pb, rb in stems_b):
        return "prefix"
    for one, other in OPPOSITE_SUFFIXES:
        for x, y in ((a, b), (b, a)):
            if x.endswith(one) and y.endswith(other) and x[: -len(one)] == y[: -len(other)]:
                return "suffix"
    return None


def sides(ws: list[str]) -> dict[str, tuple[set[str], set[str]]]:
    """For each directional word: the content words before it and after it."""
    out: dict[str, tuple[set[str], set[str]]] = {}
    for i, w in enumerate(ws):
        if w in DIRECTIONAL:
            left, right = out.setdefault(w, (set(), set()))
            left.update(singular(x) for x in ws[:i] if x not in STOP)
            right.update(singular(x) for x in ws[i + 1 :] if x not in STOP)
    return out


def swapped(wx: list[str], wy: list[str]) -> bool:
    """Some word moved from before a directional word to after it, and another the other way."""
    sides_y = sides(wy)
    for d, (left_x, right_x) in sides(wx).items():
        if d in sides_y:
            left_y, right_y = sides_y[d]
            if (left_x & right_y) - left_y and (right_x & left_y) - right_y:
                return True
    return False


def judge(cached: str, later: str) -> Verdict:
    wx, wy = words(cached), words(later)
    numbers_x = sorted(w for w in wx if w[0].isdigit() or w in NUMBER_WORDS)
    numbers_y = sorted(w for w in wy if w[0].isdigit() or w in NUMBER_WORDS)
    if numbers_x != numbers_y:
        return Verdict("a number differs")
    if sum(w in NEGATIONS for w in wx) != sum(w in NEGATIONS for w in wy):
        return Verdict("a negation differs")
    if swapped(wx, wy):
        return Verdict("two words swap sides")
    particles_x, particles_y = set(wx), set(wy)
    for pair in OPPOSITE_PARTICLES:
        if pair <= particles_x | particles_y and (particles_x & pair) != (particles_y & pair):
            return Verdict("opposite particles")
    content_x = {singular(w) for w in wx if w not in STOP}
    content_y = {singular(w) for w in wy if w not in STOP}
    only_x, only_y = content_x - content_y, content_y - content_x
    for a in sorted(only_x):
        for b in sorted(only_y):
            how = opposite(a, b)
            if how:
                return Verdict(f"a word is the other's opposite ({how}: {a} / {b})")
    names_x, names_y = names(cached), names(later)
    if names_x - names_y - content_y and names_y - names_x - content_x:
        return Verdict("a name was replaced")
    if only_x and only_y:
        return Verdict(substitution=(" ".join(sorted(only_x)), " ".join(sorted(only_y))))
    return Verdict()
