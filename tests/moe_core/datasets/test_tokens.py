"""The multi-domain character stream: fixed vocabulary, exact round trips, correct content per domain."""

import ast
import datetime
import re

import numpy as np
import pytest

from moe_core.training.datasets import DOMAINS, VOCAB, make_token_stream, probe_text
from moe_core.training.datasets.tokens import ALPHABETS, decode, encode, lexicon


@pytest.fixture(scope="module")
def stream():
    return make_token_stream(seed=0)


def lines_with_domains(text, domain_ids):
    """(line, domain id) for every complete line (the last one may be cut off by n_chars, so it is dropped)."""
    out, start = [], 0
    for i, ch in enumerate(text):
        if ch == "\n":
            out.append((text[start:i], int(domain_ids[start])))
            start = i + 1
    return out


def test_shapes_and_exact_length(stream):
    assert len(stream.text) == len(stream) == 200_000
    assert stream.ids.shape == stream.domain_ids.shape == (200_000,)
    assert stream.ids.dtype == np.int64 and stream.domain_ids.dtype == np.int64
    assert stream.domain_names == list(DOMAINS)
    assert stream.vocab_size == len(VOCAB)


def test_vocab_is_fixed_sorted_and_independent_of_seed_and_domains(stream):
    assert stream.vocab == sorted(set(stream.vocab)) == VOCAB
    assert "\n" in VOCAB
    for seed in (1, 2, 12345):
        assert make_token_stream(seed, 2000).vocab == VOCAB
    assert make_token_stream(0, 2000, domains=("code",)).vocab == VOCAB
    assert set(stream.text) <= set(VOCAB)


def test_round_trip(stream):
    assert stream.decode(stream.encode(stream.text)) == stream.text
    assert np.array_equal(stream.encode(stream.text), stream.ids)
    assert decode(stream.ids[:50]) == stream.text[:50]
    assert encode("").shape == (0,) and decode([]) == ""


def test_unknown_characters_and_ids_are_rejected():
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode("Hello")  # capital H
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode("café")
    with pytest.raises(ValueError, match="token ids"):
        decode([0, len(VOCAB)])


def test_deterministic_in_the_seed():
    a, b, c = make_token_stream(7, 5000), make_token_stream(7, 5000), make_token_stream(8, 5000)
    assert a.text == b.text and np.array_equal(a.domain_ids, b.domain_ids)
    assert a.text != c.text
    assert make_token_stream(7, 3000).text == a.text[:3000]  # a shorter stream is a prefix


def test_every_domain_has_a_reasonable_share(stream):
    shares = stream.domain_shares()
    assert set(shares) == set(DOMAINS)
    assert all(0.12 < s < 0.45 for s in shares.values()), shares
    line_domains = np.array([d for _, d in lines_with_domains(stream.text, stream.domain_ids)])
    line_shares = np.bincount(line_domains, minlength=4) / len(line_domains)
    assert np.all(np.abs(line_shares - 0.25) < 0.02)  # each line's domain is drawn uniformly


def test_domain_changes_only_at_line_boundaries(stream):
    ids, text = stream.domain_ids, stream.text
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1  # first character of a new domain
    assert len(change) > 1000
    assert all(text[i - 1] == "\n" for i in change)
    # and the newline belongs to the line it ends
    newlines = np.array([i for i, ch in enumerate(text) if ch == "\n"])
    assert np.array_equal(ids[newlines], ids[newlines - 1])


def test_each_line_stays_within_its_domain_alphabet(stream):
    for line, d in lines_with_domains(stream.text, stream.domain_ids):
        assert set(line) <= set(ALPHABETS[DOMAINS[d]]), (DOMAINS[d], line)


def _lines_of(stream, domain):
    k = stream.domain_names.index(domain)
    return [line for line, d in lines_with_domains(stream.text, stream.domain_ids) if d == k]


EQUATION = re.compile(r"(\d+)([+*-])(\d+)=(\d+)")


def test_arithmetic_is_correct(stream):
    lines = _lines_of(stream, "arithmetic")
    assert len(lines) > 1000
    n_ops = {"+": 0, "-": 0, "*": 0}
    for line in lines:
        eqs = line.split(" ")
        assert 1 <= len(eqs) <= 3
        for eq in eqs:
            m = EQUATION.fullmatch(eq)
            assert m, eq
            a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
            expected = a + b if op == "+" else a - b if op == "-" else a * b
            assert expected == c, eq
            n_ops[op] += 1
    assert min(n_ops.values()) > 500


def test_words_are_sentences_of_3_to_9_lowercase_words(stream):
    vocabulary = set(lexicon()[0])
    for line in _lines_of(stream, "words"):
        assert re.fullmatch(r"[a-z]+( [a-z]+){2,8}\.", line), line
        assert set(line[:-1].split(" ")) <= vocabulary


def test_code_lines_parse_as_python(stream):
    for line in _lines_of(stream, "code"):
        src = line.strip() + (" pass" if line.endswith(":") else "")
        ast.parse(src)  # raises SyntaxError on a malformed line


def test_dates_times_and_money_are_well_formed(stream):
    for line in _lines_of(stream, "dates"):
        for part in line.split(" "):
            if m := re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", part):
                datetime.date(int(m[1]), int(m[2]), int(m[3]))  # raises on 2023-02-29 and friends
            elif m := re.fullmatch(r"(\d{2}):(\d{2})", part):
                assert int(m[1]) < 24 and int(m[2]) < 60
            else:
                assert re.fullmatch(r"\$\d{1,3}(,\d{3})*\.\d{2}", part), part


def test_subset_of_domains():
    s = make_token_stream(3, 5000, domains=("dates", "code"))
    assert s.domain_names == ["dates", "code"]
    assert set(np.unique(s.domain_ids)) == {0, 1}
    assert set(s.text) <= set(ALPHABETS["code"]) | set(ALPHABETS["dates"]) | {"\n"}


def test_contiguous_split(stream):
    train, test = stream.split(0.1)
    assert train.text + test.text == stream.text
    assert len(test) == 20_000
    assert np.array_equal(np.concatenate([train.ids, test.ids]), stream.ids)
    assert np.array_equal(test.domain_ids, stream.domain_ids[-20_000:])
    assert train.vocab == test.vocab == VOCAB
    with pytest.raises(ValueError, match="test_fraction"):
        stream.split(1.0)


def test_probe_text_has_fixed_length_and_every_domain():
    for seed in range(20):
        text, ids = probe_text(seed)
        assert len(text) == 120 and ids.shape == (120,) and ids.dtype == np.int64
        assert set(ids.tolist()) == set(range(len(DOMAINS)))
        assert ids[0] == 0 and text.count("\n") >= 4
        change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
        assert all(text[i - 1] == "\n" for i in change)
        encode(text)  # inside the vocabulary
    assert probe_text(4)[0] == probe_text(4)[0] and probe_text(4)[0] != probe_text(5)[0]


@pytest.mark.parametrize(
    "kwargs, field",
    [({"seed": -1}, "seed"), ({"seed": 0, "n_chars": 0}, "n_chars"), ({"seed": 0, "domains": ("poems",)}, "domains"),
     ({"seed": 0, "domains": ()}, "domains"), ({"seed": 0, "domains": ("code", "code")}, "domains")],
)
def test_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        make_token_stream(**kwargs)


def test_pseudo_vocabulary_is_fixed():
    words, cum = lexicon()
    assert len(words) == len(set(words)) == 300 and abs(cum[-1] - 1) < 1e-9
    assert all(re.fullmatch(r"[a-z]{2,}", w) for w in words)
    lexicon.cache_clear()
    assert lexicon()[0] == words  # rebuilt from its own fixed seed, not from the stream's
