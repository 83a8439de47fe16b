"""Tokenize reviews and encode them as multi-hot vectors over a fixed vocabulary.

Speed matters here (50,000 reviews, about 12 million words): tokenizing is one
``str.translate`` and ``split`` per review, and every word becomes an integer
id as it is read, so the vocabulary and the encoding are NumPy work.
"""

from __future__ import annotations

import itertools
import string
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from regbench.data.sparse import BinaryCsr

# Apostrophes are dropped ("don't" -> "dont") so contractions stay one word; any
# other ASCII character that is not a letter or digit separates words.
_SEPARATORS = {ord(c): " " for c in map(chr, range(128)) if c not in string.ascii_lowercase + string.digits}
_SEPARATORS[ord("'")] = None
TOKENIZER_DESCRIPTION = (
    "lowercase; '<br />' removed; apostrophes dropped; words = runs of letters and digits (non-ASCII letters kept)"
)


def tokenize(text: str) -> list[str]:
    return text.lower().replace("<br />", " ").translate(_SEPARATORS).split()


class WordIds:
    """Give every distinct word an integer id the first time it is seen."""

    def __init__(self) -> None:
        self._ids: defaultdict[str, int] = defaultdict(itertools.count().__next__)

    def encode(self, tokens: Sequence[str]) -> np.ndarray:
        return np.fromiter(map(self._ids.__getitem__, tokens), dtype=np.int32, count=len(tokens))

    def words(self) -> list[str]:
        words = [""] * len(self._ids)
        for word, index in self._ids.items():
            words[index] = word
        return words


def build_vocabulary(documents: Iterable[Sequence[str]], size: int) -> dict[str, int]:
    """The ``size`` most frequent words, most frequent first; ties broken alphabetically."""
    word_ids = WordIds()
    encoded = [word_ids.encode(tokens) for tokens in documents]
    return vocabulary_from_ids(encoded, word_ids.words(), size)


def vocabulary_from_ids(documents: Sequence[np.ndarray], words: Sequence[str], size: int) -> dict[str, int]:
    if size <= 0:
        raise ValueError(f"vocabulary size must be positive, got {size}")
    all_ids = np.concatenate(documents) if documents else np.zeros(0, dtype=np.int32)
    counts = np.bincount(all_ids, minlength=len(words))
    present = np.flatnonzero(counts)
    ranked = sorted(present.tolist(), key=lambda i: (-counts[i], words[i]))[:size]
    return {words[i]: rank for rank, i in enumerate(ranked)}


def multi_hot_ids(documents: Sequence[np.ndarray], id_to_column: np.ndarray, n_columns: int) -> BinaryCsr:
    """Rows of word ids -> 0/1 rows over the vocabulary columns (-1 in ``id_to_column``: not in it)."""
    uniques = [np.unique(ids) for ids in documents]
    lengths = np.fromiter((len(u) for u in uniques), dtype=np.int64, count=len(uniques))
    flat = np.concatenate(uniques) if uniques else np.zeros(0, dtype=np.int32)
    columns = id_to_column[flat]
    keep = columns >= 0
    kept_per_row = np.add.reduceat(keep, np.concatenate([[0], np.cumsum(lengths)[:-1]])) if len(flat) else lengths
    kept_per_row = np.where(lengths > 0, kept_per_row, 0)
    indptr = np.concatenate([[0], np.cumsum(kept_per_row)]).astype(np.int64)
    columns = columns[keep]
    # Sort columns within each row (np.unique sorted word ids, not vocabulary ranks).
    row_of = np.repeat(np.arange(len(documents)), kept_per_row)
    order = np.lexsort((columns, row_of))
    return BinaryCsr(indptr=indptr, indices=columns[order].astype(_index_dtype(n_columns)), n_columns=n_columns)


def multi_hot(documents: Iterable[Sequence[str]], vocabulary: dict[str, int]) -> BinaryCsr:
    """One row per document with a 1 at the column of each vocabulary word it contains."""
    word_ids = WordIds()
    for word in vocabulary:
        word_ids.encode([word])
    encoded = [word_ids.encode(tokens) for tokens in documents]
    id_to_column = np.full(len(word_ids.words()), -1, dtype=np.int64)
    for word, column in vocabulary.items():
        id_to_column[word_ids.encode([word])[0]] = column
    return multi_hot_ids(encoded, id_to_column, len(vocabulary))


def _index_dtype(n_columns: int) -> type:
    return np.uint16 if n_columns <= np.iinfo(np.uint16).max + 1 else np.int32
