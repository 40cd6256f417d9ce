"""A multi-domain character stream for a tiny MoE language model: does an expert end up owning a domain?

The text is newline-separated lines; each line belongs to exactly one of four generated domains, and the
newline that ends a line belongs to that line's domain (so `domain_ids` only changes right after a "\\n"):

    arithmetic  correct equations, 1-3 per line:      37+5=42 12*3=36 81-9=72
    words       sentences of 3-9 pseudo-words:         tolu ka mirense bo tal.
    code        Python-like statements:                if total > n: return data
    dates       dates, times and money amounts:        2024-03-17 12:45 $1,250.00

Nothing is downloaded. The pseudo-vocabulary of `words` is built once from consonant-vowel syllables with
a fixed seed, so it is the same for every stream; everything else comes from `np.random.default_rng(seed)`.
Each line's domain is drawn uniformly at random, so every domain gets about a quarter of the *lines*; their
character shares differ because their lines differ in length (words lines are the longest).

The vocabulary is fixed: the sorted union of every domain's alphabet plus "\\n", independent of the seed
and of which domains a stream uses, so token ids mean the same thing in every stream and checkpoint.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import accumulate

import numpy as np

DOMAINS = ("arithmetic", "words", "code", "dates")

_DIGITS = "0123456789"
_CONSONANTS = "bcdfghklmnprstvz"
_VOWELS = "aeiou"
_LOWER = "abcdefghijklmnopqrstuvwxyz"
ALPHABETS: dict[str, str] = {  # every character a domain's lines may contain (besides "\n")
    "arithmetic": _DIGITS + "+-*= ",
    "words": _CONSONANTS + _VOWELS + " .",
    "code": _LOWER + _DIGITS + " _=()<>!+,:",
    "dates": _DIGITS + "-:$,. ",
}
VOCAB: list[str] = sorted(set("".join(ALPHABETS.values())) | {"\n"})
STOI: dict[str, int] = {ch: i for i, ch in enumerate(VOCAB)}
PROBE_LENGTH = 120

_ASCII_TO_ID = np.full(256, -1, dtype=np.int64)  # a lookup table: encode() is one numpy gather
for _ch, _i in STOI.items():
    _ASCII_TO_ID[ord(_ch)] = _i
_ID_TO_ASCII = np.array([ord(ch) for ch in VOCAB], dtype=np.uint8)


class _Dice:
    """Scalar random draws from a numpy Generator, pre-drawn in blocks.

    Calling rng.integers() once per draw costs microseconds of numpy overhead; we need ~15 draws per line
    and ~10k lines for 200k characters. A Python float from a pre-drawn list is ~20x cheaper, and the
    stream stays a pure function of the seed.
    """

    def __init__(self, rng: np.random.Generator, block: int = 8192) -> None:
        self._rng, self._block = rng, block
        self._buf: list[float] = []
        self._i = 0

    def random(self) -> float:
        if self._i == len(self._buf):
            self._buf, self._i = self._rng.random(self._block).tolist(), 0
        u = self._buf[self._i]
        self._i += 1
        return u

    def randint(self, low: int, high: int) -> int:
        """Uniform integer in [low, high)."""
        return low + int(self.random() * (high - low))

    def choice(self, seq: Sequence[str]) -> str:
        return seq[int(self.random() * len(seq))]


# -- the four domains: each is a function (dice) -> one line, without its newline ------------------------
def _arithmetic_line(d: _Dice) -> str:
    eqs = []
    for _ in range(d.randint(1, 4)):
        op = d.choice("+-*")
        if op == "*":
            a, b = d.randint(0, 13), d.randint(0, 13)
            eqs.append(f"{a}*{b}={a * b}")
        elif op == "+":
            a, b = d.randint(0, 100), d.randint(0, 100)
            eqs.append(f"{a}+{b}={a + b}")
        else:  # keep results non-negative: "-" only ever means subtraction, never a sign
            a = d.randint(0, 100)
            b = d.randint(0, a + 1)
            eqs.append(f"{a}-{b}={a - b}")
    return " ".join(eqs)


@cache
def lexicon(n_words: int = 300, seed: int = 1991) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The pseudo-English word list (shortest first) and its cumulative Zipf weights (p ~ 1 / (rank + 2)).

    Built once from syllables CV / CVC / V with its own fixed seed, so every stream shares it.
    """
    rng = np.random.default_rng(seed)
    words: set[str] = set()
    while len(words) < n_words:
        patterns = [str(rng.choice(["CV", "CV", "CVC"])) for _ in range(int(rng.choice([1, 2, 2, 3])))]
        if rng.random() < 0.2:  # some words start with a vowel ("ale", "omat")
            patterns[0] = patterns[0][1:]  # drop the leading consonant
        word = "".join(str(rng.choice(list(_CONSONANTS if p == "C" else _VOWELS))) for p in "".join(patterns))
        if len(word) >= 2:
            words.add(word)
    ordered = tuple(sorted(words, key=lambda w: (len(w), w)))  # short words are the frequent ones, as in English
    weights = 1.0 / (np.arange(n_words) + 2.0)
    return ordered, tuple(accumulate((weights / weights.sum()).tolist()))


def _words_line(d: _Dice) -> str:
    words, cum = lexicon()
    last = len(words) - 1
    picked = [words[min(bisect.bisect_right(cum, d.random()), last)] for _ in range(d.randint(3, 10))]
    return " ".join(picked) + "."


_VARS = ("x", "y", "z", "a", "b", "c", "i", "j", "n", "k", "total", "count", "item", "data", "value")
_FUNCS = ("foo", "bar", "len", "max", "min", "sum", "abs", "get_item", "parse", "load")
_CMPS = (">", "<", "==", "!=", ">=", "<=")


def _while_line(d: _Dice) -> str:
    v = d.choice(_VARS)
    return f"while {v} {d.choice(('<', '<='))} {d.randint(0, 100)}: {v} += 1"


_CODE_TEMPLATES: tuple[Callable[[_Dice], str], ...] = (
    lambda d: f"{d.choice(_VARS)} = {d.choice(_FUNCS)}({d.choice(_VARS)}, {d.randint(0, 100)})",
    lambda d: f"{d.choice(_VARS)} = {d.choice(_VARS)} + {d.randint(0, 100)}",
    lambda d: f"if {d.choice(_VARS)} {d.choice(_CMPS)} {d.choice(_VARS)}: return {d.choice(_VARS)}",
    lambda d: f"for {d.choice(('i', 'j', 'k'))} in range({d.randint(1, 100)}):",
    lambda d: _while_line(d),
    lambda d: f"def {d.choice(_FUNCS)}({d.choice(_VARS)}, {d.choice(_VARS)}):",
    lambda d: f"return {d.choice(_FUNCS)}({d.choice(_VARS)})",
    lambda d: f"print({d.choice(_VARS)}, {d.choice(_VARS)})",
    lambda d: f"{d.choice(_VARS)} += {d.choice(_FUNCS)}({d.choice(_VARS)})",
)


def _code_line(d: _Dice) -> str:
    line = _CODE_TEMPLATES[d.randint(0, len(_CODE_TEMPLATES))](d)
    indent = not line.startswith("def") and d.random() < 0.4  # bodies of an imagined def / for
    return ("    " + line) if indent else line


_MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _date(d: _Dice) -> str:
    year, month = d.randint(1990, 2031), d.randint(1, 13)
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = _MONTH_DAYS[month - 1] + (1 if month == 2 and leap else 0)
    return f"{year:04d}-{month:02d}-{d.randint(1, days + 1):02d}"


def _time(d: _Dice) -> str:
    return f"{d.randint(0, 24):02d}:{d.randint(0, 60):02d}"


def _money(d: _Dice) -> str:
    dollars = int(10 ** (d.random() * 5))  # log-uniform 1 .. 99,999: small amounts as common as large
    return f"${dollars:,}.{d.randint(0, 100):02d}"


_DATE_PATTERNS = ((_date,), (_date, _time), (_time,), (_money,), (_date, _money), (_date, _time, _money))


def _dates_line(d: _Dice) -> str:
    return " ".join(part(d) for part in _DATE_PATTERNS[d.randint(0, len(_DATE_PATTERNS))])


LINE_GENERATORS: dict[str, Callable[[_Dice], str]] = {
    "arithmetic": _arithmetic_line,
    "words": _words_line,
    "code": _code_line,
    "dates": _dates_line,
}


# -- encoding -----------------------------------------------------------------------------------------
def encode(text: str) -> np.ndarray:
    """Characters -> int64 ids in VOCAB; raises ValueError naming any character outside the vocabulary."""
    try:
        raw = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        raw = None
    ids = None if raw is None else _ASCII_TO_ID[raw]
    if ids is None or (ids < 0).any():
        unknown = sorted(set(text) - set(STOI))
        raise ValueError(f"characters not in the vocabulary: {unknown!r}; allowed: {''.join(VOCAB)!r}")
    return ids


def decode(ids: Sequence[int] | np.ndarray) -> str:
    """int ids -> text; raises ValueError for an id outside 0..len(VOCAB)-1."""
    a = np.asarray(ids, dtype=np.int64).ravel()
    if a.size and (a.min() < 0 or a.max() >= len(VOCAB)):
        raise ValueError(f"token ids must be in 0..{len(VOCAB) - 1}, got {a.min()}..{a.max()}")
    return _ID_TO_ASCII[a].tobytes().decode("ascii")


@dataclass(frozen=True, eq=False)
class TokenStream:
    """One long generated text, its token ids and, per character, the domain it came from."""

    text: str  # the characters, lines separated by "\n"
    ids: np.ndarray  # (n_chars,) int64 ids into vocab
    domain_ids: np.ndarray  # (n_chars,) int64 index into domain_names, per character
    vocab: list[str]  # sorted characters; the same for every stream (VOCAB)
    domain_names: list[str]  # the domains this stream was built from, in the order given

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def n_domains(self) -> int:
        return len(self.domain_names)

    def __len__(self) -> int:
        return len(self.text)

    def encode(self, text: str) -> np.ndarray:
        return encode(text)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return decode(ids)

    def domain_shares(self) -> dict[str, float]:
        """Share of the characters that belong to each domain."""
        counts = np.bincount(self.domain_ids, minlength=self.n_domains) / max(len(self), 1)
        return {name: float(c) for name, c in zip(self.domain_names, counts, strict=True)}

    def split(self, test_fraction: float = 0.1) -> tuple[TokenStream, TokenStream]:
        """Contiguous (train, test) split: the first 1 - test_fraction of the characters, then the rest.

        Contiguous rather than shuffled so that no test window overlaps a training window.
        """
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction={test_fraction!r} is out of range: allowed a number in (0, 1)")
        if len(self) < 2:
            raise ValueError("a stream needs at least 2 characters to split")
        cut = min(max(1, round(len(self) * (1.0 - test_fraction))), len(self) - 1)

        def part(s: slice) -> TokenStream:
            return TokenStream(self.text[s], self.ids[s], self.domain_ids[s], list(self.vocab),
                               list(self.domain_names))

        return part(slice(0, cut)), part(slice(cut, None))

    train_test_split = split


def _check_domains(domains: Sequence[str]) -> tuple[str, ...]:
    domains = tuple(domains)
    unknown = [d for d in domains if d not in LINE_GENERATORS]
    if not domains or unknown or len(set(domains)) != len(domains):
        raise ValueError(f"domains={domains!r} is out of range: allowed a non-empty set of distinct names "
                         f"from {', '.join(DOMAINS)}")
    return domains


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r} is out of range: allowed a non-negative integer")


def make_token_stream(seed: int, n_chars: int = 200_000, domains: tuple[str, ...] = DOMAINS) -> TokenStream:
    """Generate exactly n_chars characters of newline-separated lines, each line's domain drawn uniformly.

    The last line is cut off wherever n_chars ends. Same arguments, same stream.
    """
    _check_seed(seed)
    if isinstance(n_chars, bool) or not isinstance(n_chars, (int, np.integer)) or not 1 <= n_chars <= 50_000_000:
        raise ValueError(f"n_chars={n_chars!r} is out of range: allowed an integer from 1 to 50000000")
    domains = _check_domains(domains)
    d = _Dice(np.random.default_rng(seed))
    gens = [LINE_GENERATORS[name] for name in domains]
    lines: list[str] = []
    line_domain: list[int] = []
    total = 0
    while total < n_chars:
        k = d.randint(0, len(gens))
        line = gens[k](d) + "\n"
        lines.append(line)
        line_domain.append(k)
        total += len(line)
    text = "".join(lines)[:n_chars]
    domain_ids = np.repeat(np.array(line_domain, dtype=np.int64), [len(s) for s in lines])[:n_chars]
    return TokenStream(text, encode(text), domain_ids, list(VOCAB), list(domains))


def probe_text(seed: int, length: int = PROBE_LENGTH) -> tuple[str, np.ndarray]:
    """A short fixed-length text (exactly `length` chars) with one line of every domain, and its domain ids.

    Lines come in DOMAINS order; the ids index DOMAINS. We redraw the four lines until they fit in `length`
    (they almost always do within a few tries), then keep cycling the domains to fill up, cutting the last line.
    """
    _check_seed(seed)
    if not isinstance(length, int) or length < 40:
        raise ValueError(f"length={length!r} is out of range: allowed an integer >= 40")
    d = _Dice(np.random.default_rng(seed))
    for _ in range(1000):
        lines = [LINE_GENERATORS[name](d) + "\n" for name in DOMAINS]
        if sum(map(len, lines)) <= length:
            break
    else:  # never seen in practice; shorten the lines rather than loop forever
        lines = [s[: length // len(DOMAINS) - 1] + "\n" for s in lines]
    doms = list(range(len(DOMAINS)))
    while sum(map(len, lines)) < length:
        k = len(lines) % len(DOMAINS)
        lines.append(LINE_GENERATORS[DOMAINS[k]](d) + "\n")
        doms.append(k)
    text = "".join(lines)[:length]
    ids = np.repeat(np.array(doms, dtype=np.int64), [len(s) for s in lines])[:length]
    return text, ids
