"""Byte-level BPE (HF tokenizers) with the 16 reserved specials of SPEC section 5 at ids 0..15.

No post-processor: <s> is prepended by chunking, so encoding a prompt gives only its own tokens.
Corpus text is tokenised as plain text, so a literal "<unk>" in WikiText becomes ordinary bytes and
special ids never appear inside training documents.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from core.errors import UserError
from core.specials import SPECIAL_TOKENS, UNK_ID

PIECE_CHARS = 16_384  # documents longer than this are cut into pieces for training and encoding
ENCODE_BATCH_CHARS = 8 << 20  # text per encode_batch call: bounds the memory held in Encoding objects

# A newline between two non-space characters is a boundary the byte-level pre-tokenizer never
# crosses (GPT-2's regex makes a lone "\n" its own pre-token there, and add_prefix_space is off), so
# encoding the pieces gives exactly the ids of encoding the whole document. Python's \s is a superset
# of the Rust regex's whitespace, which only makes this pattern more cautious.
_SAFE_BREAK = re.compile(r"(?<=\S)\n(?=\S)")


def split_for_encoding(document: str, piece_chars: int = PIECE_CHARS) -> list[str]:
    """Cut a long document (a BabyLM file without blank lines can be 30 MB) into pieces whose ids
    concatenate to the document's ids, so encoding runs in parallel and in bounded memory."""
    pieces, start = [], 0
    while len(document) - start > piece_chars:
        found = _SAFE_BREAK.search(document, start + piece_chars)
        if found is None:
            break
        pieces.append(document[start : found.end()])
        start = found.end()
    pieces.append(document[start:])
    return pieces


def _pieces(documents: Iterable[str]) -> Iterator[str]:
    for document in documents:
        yield from split_for_encoding(document)


def new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS[UNK_ID]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def check_vocab_size(vocab_size: int) -> None:
    """data.vocab_size leaves room for a merge beyond the 16 specials and the 256 bytes."""
    if vocab_size <= len(SPECIAL_TOKENS) + 256:
        raise UserError(
            f"data.vocab_size must exceed {len(SPECIAL_TOKENS) + 256} (16 specials + 256 bytes), "
            f"got {vocab_size}."
        )


def check_vocab(tok: Tokenizer, vocab_size: int, where) -> int:
    """data.vocab_size (the model's embedding rows) against the ids of a tokenizer, read from `where`:
    refused when the tokenizer has ids the model has no row for; else the rows no id uses."""
    ids = tok.get_vocab_size()
    if ids > vocab_size:
        raise UserError(
            f"{where} has {ids:,} ids but the model has only {vocab_size:,}: the tokenizer belongs to "
            "another run."
        )
    return vocab_size - ids


def train_tokenizer(documents: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE of at most vocab_size ids (fewer when the corpus runs out of pairs to merge)."""
    check_vocab_size(vocab_size)
    tok = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,  # given first, so they take ids 0..15 in order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable, whatever the corpus
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(_pieces(documents), trainer)
    check_tokenizer(tok)
    return tok


def encode_documents(tok: Tokenizer, documents: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All documents' ids as one int32 stream, and each document's length (int64)."""
    ids: list[np.ndarray] = []
    lengths = np.zeros(len(documents), dtype=np.int64)
    batch: list[str] = []
    owners: list[int] = []
    size = 0
    previous = tok.encode_special_tokens
    tok.encode_special_tokens = True  # corpus text is text: "<mask>" in a document is not the mask token
    try:
        for index, document in enumerate(documents):
            for piece in split_for_encoding(document):
                batch.append(piece)
                owners.append(index)
                size += len(piece)
            if size >= ENCODE_BATCH_CHARS:
                _encode_batch(tok, batch, owners, ids, lengths)
                batch, owners, size = [], [], 0
        _encode_batch(tok, batch, owners, ids, lengths)
    finally:
        tok.encode_special_tokens = previous
    stream = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int32)
    return stream, lengths


def _encode_batch(
    tok: Tokenizer, batch: list[str], owners: list[int], ids: list[np.ndarray], lengths: np.ndarray
) -> None:
    if not batch:
        return
    # encode_batch_fast skips offset tracking, which we never use.
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)
    encodings = [e.ids for e in encode(batch, add_special_tokens=False)]
    counts = np.fromiter((len(e) for e in encodings), dtype=np.int64, count=len(encodings))
    np.add.at(lengths, np.asarray(owners, dtype=np.int64), counts)
    ids.append(np.fromiter(itertools.chain.from_iterable(encodings), dtype=np.int32, count=int(counts.sum())))


def load_tokenizer(path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"Tokenizer file {path} does not exist: prepare the data again or point at the run's "
            "tokenizer.json."
        )
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
        raise UserError(
            f"{path} is not a valid tokenizer file ({str(e).splitlines()[0][:120]}): delete it to have it "
            "rebuilt."
        ) from None
    check_tokenizer(tok, where=str(path))
    return tok


def check_tokenizer(tok: Tokenizer, where: str = "The tokenizer") -> None:
    for expected, token in enumerate(SPECIAL_TOKENS):
        found = tok.token_to_id(token)
        if found != expected:
            got = "is missing" if found is None else f"has id {found}"
            raise UserError(
                f"{where} is not an mdlm-tui tokenizer: special token {token} {got}, expected id {expected}."
            )
