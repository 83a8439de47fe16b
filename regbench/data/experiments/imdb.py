"""imdb (tutorial 005, Deep Learning with Python 4.4): multi-hot reviews over the 10,000 most frequent words."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from regbench.data import digests
from regbench.data.experiments import Arrays, DataError, Experiment, Raw
from regbench.schema import check, positive_int
from regbench.data.text import TOKENIZER_DESCRIPTION, WordIds, multi_hot_ids, tokenize, vocabulary_from_ids


@dataclass(frozen=True)
class ImdbPrepare:
    vocab_size: int = check(positive_int, "must be a positive integer", default=10000)


def prepare(params: ImdbPrepare, raw: Raw) -> tuple[Arrays, dict]:
    """Tokenize the reviews straight out of the tar.gz; the vocabulary comes from train only."""
    word_ids = WordIds()
    splits: dict[str, list[tuple[str, np.ndarray, int]]] = {"train": [], "test": []}
    records = []
    try:
        for relpath, data in digests.iter_imdb_reviews(raw.file):
            records.append((relpath, digests.sha256_bytes(data)))
            split, polarity, _ = relpath.split("/", 2)
            ids = word_ids.encode(tokenize(data.decode("utf-8")))
            splits[split].append((relpath, ids, 1 if polarity == "pos" else 0))
    except (OSError, EOFError, UnicodeDecodeError, digests.ArchiveError) as error:
        raise DataError(f"{raw.file.name}: unreadable archive ({type(error).__name__}: {error})") from None
    if not splits["train"] or not splits["test"]:
        raise DataError(f"{raw.file.name}: no train or no test reviews found under aclImdb/")
    content, count = digests.imdb_content_digest(records)
    if content != raw.source["digest"]:
        raise DataError(
            f"{raw.file}: content digest {content} does not match the fetched "
            f"{raw.source['digest']}; rerun `dvc repro -f fetch@imdb`"
        )
    for reviews in splits.values():
        # Archive order is arbitrary: sort by path so the arrays do not depend on packing.
        reviews.sort(key=lambda review: review[0])
    words = word_ids.words()
    vocabulary = vocabulary_from_ids([ids for _, ids, _ in splits["train"]], words, params.vocab_size)
    id_to_column = np.full(len(words), -1, dtype=np.int64)
    for index, word in enumerate(words):
        id_to_column[index] = vocabulary.get(word, -1)
    arrays = {}
    for split, reviews in splits.items():
        arrays[f"x_{split}"] = multi_hot_ids([ids for _, ids, _ in reviews], id_to_column, len(vocabulary))
        arrays[f"y_{split}"] = np.asarray([label for _, _, label in reviews], dtype=np.float32)
    info = {
        "reviews": count,
        "raw_content_digest": content,
        "vocabulary_size": len(vocabulary),
        "vocabulary_head": list(vocabulary)[:20],
        "tokenizer": TOKENIZER_DESCRIPTION,
    }
    return arrays, info


EXPERIMENT = Experiment(
    name="imdb",
    prepare_params=ImdbPrepare,
    prepare=prepare,
    raw_dataset="imdb",
    headline_metric="val_loss",
    validation_is="test set",
    # No data scope: the 25,000/25,000 split is the published one (Maas et al., 2011), with the test reviews
    # from other films than the training ones; a redrawn split would mix them.
    varies={"setup": ("weights", "order", "masks")},
    keeps={"setup": "the published 25,000/25,000 train/test split (test reviews are of other films), in every scope"},
)
