"""From a corpus to cached token chunks, and a resumable stream of batches over them.

Cache layout (every folder built under a temporary name and renamed into place, so a crash or two
concurrent runs never leave a half-written one):

    <cache root>/<hash of corpus identity, vocab_size, dev_fraction, format>/
        tokenizer.json  train_ids.npy  train_lengths.npy  dev_ids.npy  dev_lengths.npy
        token_counts.npy  meta.json
        seq<seq_len>/   tokenizer.json  train.npy  train_words.npy  dev.npy  token_counts.npy  meta.json

Tokenising a 100M-word corpus takes minutes and does not depend on seq_len, so changing only the
sequence length re-chunks the cached ids instead of retraining and re-encoding. Each meta.json holds
the sha256 of its folder's files, checked before they are read: a damaged cache is rebuilt, never
trained on. Temporary folders name their creator (host and pid), so a build killed midway is
cleaned up by the next one. A chunk folder of an older CHUNK_FORMAT is cut again from the cached ids.

train_words.npy holds each training chunk's share of the corpus's whitespace-separated words (a word
counts in the chunk holding its first byte), so the words a run has seen are exact at every step.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tokenizers import Tokenizer

from core.config import DataConfig
from core.corpus import cache_root, find_corpus, human_count
from core.errors import UserError
from core.runs import sha256_file
from core.specials import BOS_ID, NUM_SPECIAL, PAD_ID
from core.tokenizer import check_vocab_size, encode_documents, load_tokenizer, train_tokenizer

FORMAT_VERSION = 1
CHUNK_FORMAT = 2  # 2: train_words.npy


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    tokenizer_path: Path
    train: (
        np.ndarray
    )  # [N, seq_len] int32: <s> + up to seq_len-1 tokens of one document, right-padded with PAD_ID
    train_words: np.ndarray  # [N] int32: the words that start in each training chunk
    dev: np.ndarray
    token_counts: np.ndarray  # [vocab_size] int64 over the training token stream, without <s> and pads
    description: str
    cache_path: Path

    @cached_property
    def sequence_counts(self) -> np.ndarray:
        """[vocab_size] int64 over the padded training sequences, <s> and pads included (as released).
        Computed on first use rather than cached on disk, so caches built before it need no rebuild."""
        return sequence_token_counts(self.train, len(self.token_counts))


def sequence_token_counts(chunks: np.ndarray, vocab_size: int, block_rows: int = 1 << 16) -> np.ndarray:
    """Count every id of the [N, seq_len] chunks, <s> and pads included: np.bincount of the array.
    Blockwise, so a memory-mapped 100M-token corpus is never copied whole into int64."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(chunks), block_rows):
        counts += np.bincount(np.asarray(chunks[start : start + block_rows]).ravel(), minlength=vocab_size)
    return counts


def masking_counts(data: PreparedData, statistics: str) -> np.ndarray:
    """The frequency table that masking.statistics goes with (SPEC 3): counts over the padded sequences
    for "sequence", over the token stream without specials for "maskable"."""
    if statistics == "sequence":
        return data.sequence_counts
    if statistics == "maskable":
        return data.token_counts
    raise ValueError(f"Unknown masking statistics '{statistics}'; choose sequence or maskable.")


def prepare_data(cfg: DataConfig, log: Callable[[str], None] = print) -> PreparedData:
    check_vocab_size(cfg.vocab_size)
    if cfg.seq_len < 2:
        raise UserError(f"data.seq_len must be at least 2 (<s> and one token), got {cfg.seq_len}.")
    source = find_corpus(cfg)
    key = {
        "identity": source.identity,
        "vocab_size": cfg.vocab_size,
        "dev_fraction": cfg.dev_fraction,
        "format": FORMAT_VERSION,
    }
    tokens_dir = cache_root(cfg) / hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    try:
        return _prepare_cached(source, cfg, key, tokens_dir, log)
    except (OSError, ValueError, KeyError, UserError) as e:
        if not _complete(tokens_dir):
            raise
        # A cache damaged by a full disk or a hand edit is rebuilt rather than trusted or fatal.
        log(f"data: the cache at {tokens_dir} is unreadable ({e}); rebuilding it")
        shutil.rmtree(tokens_dir, ignore_errors=True)
        return _prepare_cached(source, cfg, key, tokens_dir, log)


def _prepare_cached(
    source, cfg: DataConfig, key: dict, tokens_dir: Path, log: Callable[[str], None]
) -> PreparedData:
    if _complete(tokens_dir):
        log(f"data: using cached tokenizer and token ids from {tokens_dir}")
    else:
        _build_atomically(tokens_dir, lambda tmp: _tokenise(source, cfg, key, tmp, log))
    chunks_dir = tokens_dir / f"seq{cfg.seq_len}"
    if _complete(chunks_dir) and _chunk_format(chunks_dir) != CHUNK_FORMAT:
        log(f"data: the cached chunks in {chunks_dir} have no word counts; cutting them again")
        shutil.rmtree(chunks_dir, ignore_errors=True)
    if _complete(chunks_dir):
        log(f"data: using cached {cfg.seq_len}-token chunks from {chunks_dir}")
    else:
        _build_atomically(chunks_dir, lambda tmp: _chunk(tokens_dir, cfg.seq_len, tmp, log))
    return _load(chunks_dir)


# ---------------------------------------------------------------- building the cache


def _complete(folder: Path) -> bool:
    return (folder / "meta.json").is_file()


def _chunk_format(folder: Path) -> int | None:
    try:
        return json.loads((folder / "meta.json").read_text()).get("chunk_format")
    except (OSError, ValueError, AttributeError):
        return None


def _reason(e: OSError) -> str:
    text = e.strerror or str(e) or type(e).__name__  # some OSErrors carry no strerror
    if " requested and " in text and text.endswith(" written"):  # numpy's short write: a full disk
        return f"the disk is full: {text}"
    return text


# .<folder>.tmp-<pid>-<host hash>.<random>: who builds it; older builds wrote .<folder>.<random>
_TEMP = re.compile(r"\.(?:[0-9a-f]{16}|seq\d+)\.(?:tmp-(\d+)-([0-9a-f]{8})\.)?[^/]+")
_FOREIGN_STALE_S = 3600  # a temp folder of another host (or an older build) this old is abandoned


def _host_id() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # alive under another user; or no pid at all
        return True
    return True


def _abandoned(folder: Path) -> bool:
    match = _TEMP.fullmatch(folder.name)
    if match is None or not folder.is_dir():
        return False
    pid, host = match.groups()
    if pid is not None and host == _host_id():
        return not _pid_alive(int(pid))
    return time.time() - folder.stat().st_mtime > _FOREIGN_STALE_S  # its creator cannot be asked


def _remove_abandoned(parent: Path) -> None:
    """Temp folders of builds that were killed (kill -9, power loss) before they could clean up."""
    for folder in parent.glob(".*"):
        try:
            if _abandoned(folder):
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:  # gone meanwhile, or not ours to remove
            continue


def _build_atomically(final: Path, build: Callable[[Path], None]) -> None:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(final.parent)
        prefix = f".{final.name}.tmp-{os.getpid()}-{_host_id()}."
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
        tmp.chmod(0o755)  # mkdtemp's 0700 would lock others out of a shared cache_dir
    except OSError as e:
        raise UserError(
            f"Cannot write the data cache in {final.parent} ({_reason(e)}): "
            "set data.cache_dir to a writable folder."
        ) from None
    try:
        build(tmp)
        if final.exists() and not _complete(final):
            shutil.rmtree(final, ignore_errors=True)  # left by an older, interrupted layout; never by us
        try:
            os.rename(tmp, final)
        except OSError:
            if not _complete(final):  # another run finished the same folder first; theirs is as good
                raise
    except OSError as e:
        raise UserError(
            f"Writing the data cache in {final.parent} failed ({_reason(e)}): "
            "free disk space or set data.cache_dir."
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save(folder: Path, name: str, array: np.ndarray) -> None:
    np.save(folder / name, array, allow_pickle=False)


def _write_meta(folder: Path, meta: dict) -> None:
    # Written last: its presence marks the folder complete.
    sums = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}
    (folder / "meta.json").write_text(json.dumps({**meta, "sha256": sums}, indent=2) + "\n")


def _check(folder: Path) -> dict:
    """The folder's meta, once every file matches its sha256 (caches from before checksums pass
    unchecked); ValueError names the first file that does not."""
    meta = json.loads((folder / "meta.json").read_text())
    if not isinstance(meta, dict):
        raise ValueError("meta.json is not a JSON object")
    for name, digest in meta.get("sha256", {}).items():
        path = folder / name
        if path.parent != folder or not path.is_file() or sha256_file(path) != digest:
            raise ValueError(f"{name} does not match its sha256 in meta.json")
    return meta


def _tokenise(source, cfg: DataConfig, key: dict, folder: Path, log: Callable[[str], None]) -> None:
    started = time.perf_counter()
    corpus = source.read()
    log(f"data: read {corpus.description} in {time.perf_counter() - started:.1f}s")

    started = time.perf_counter()
    tok = train_tokenizer(corpus.train, cfg.vocab_size)
    tok.save(str(folder / "tokenizer.json"))
    log(
        f"data: trained a byte-level BPE tokenizer ({tok.get_vocab_size():,} ids) in "
        f"{time.perf_counter() - started:.1f}s"
    )

    started = time.perf_counter()
    train_ids, train_lengths = encode_documents(tok, corpus.train)
    dev_ids, dev_lengths = encode_documents(tok, corpus.dev)
    counts = np.bincount(train_ids, minlength=cfg.vocab_size).astype(np.int64)
    for name, array in [
        ("train_ids", train_ids),
        ("train_lengths", train_lengths),
        ("dev_ids", dev_ids),
        ("dev_lengths", dev_lengths),
        ("token_counts", counts),
    ]:
        _save(folder, f"{name}.npy", array)
    log(
        f"data: tokenised {human_count(len(train_ids))} train and {human_count(len(dev_ids))} dev tokens "
        f"in {time.perf_counter() - started:.1f}s"
    )
    _write_meta(
        folder,
        {
            **key,
            "description": corpus.description,
            "tokenizer_vocab": tok.get_vocab_size(),
            "train_tokens": int(len(train_ids)),
            "dev_tokens": int(len(dev_ids)),
            "train_documents": len(corpus.train),
            "dev_documents": len(corpus.dev),
        },
    )


def _token_blocks(lengths: np.ndarray, seq_len: int, block_tokens: int):
    """Blocks of whole documents of about block_tokens ids: (stream slice, each id's chunk, its column).
    Vectorised per block, so millions of short documents are fast and the index arrays of a
    100M-token corpus never exist all at once."""
    body = seq_len - 1
    per_doc = -(-lengths // body)  # ceil; an empty document gives no chunk
    doc_ends = np.cumsum(lengths)
    doc_starts = doc_ends - lengths
    first_chunk = np.cumsum(per_doc) - per_doc
    first = 0
    while first < len(lengths):
        last = max(first + 1, int(np.searchsorted(doc_ends, doc_starts[first] + block_tokens, side="right")))
        doc_of_token = np.repeat(np.arange(first, last), lengths[first:last])
        position = np.arange(doc_starts[first], doc_ends[last - 1]) - doc_starts[doc_of_token]
        yield (
            slice(doc_starts[first], doc_ends[last - 1]),
            first_chunk[doc_of_token] + position // body,
            position,
        )
        first = last


def chunk_documents(
    ids: np.ndarray, lengths: np.ndarray, seq_len: int, block_tokens: int = 1 << 23
) -> np.ndarray:
    """Cut each document into pieces of seq_len-1 ids, prepend <s>, right-pad with <pad> (SPEC 5)."""
    out = np.full((int((-(-lengths // (seq_len - 1))).sum()), seq_len), PAD_ID, dtype=np.int32)
    out[:, 0] = BOS_ID
    for where, chunk, position in _token_blocks(lengths, seq_len, block_tokens):
        out[chunk, 1 + position % (seq_len - 1)] = ids[where]
    return out


_SPACE_BYTES = b"\t\n\x0b\x0c\r "  # the whitespace of corpus.count_words


def _byte_level_decoder() -> dict[str, int]:
    """The ByteLevel pre-tokenizer's alphabet back to bytes (GPT-2's bytes_to_unicode, inverted)."""
    printable = {
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    }
    extra = iter(range(256, 512))
    return {chr(b if b in printable else next(extra)): b for b in range(256)}


def word_table(tok: Tokenizer) -> np.ndarray:
    """[vocab, 3] int32 per id: words starting after its first byte, whether its first byte is a
    non-space, whether its last byte is a space. Special ids never occur in documents: zeros."""
    decode = _byte_level_decoder()
    table = np.zeros((tok.get_vocab_size(), 3), dtype=np.int32)
    for token, index in tok.get_vocab().items():
        if index < NUM_SPECIAL:
            continue
        data = bytes(decode[c] for c in token)
        space = [b in _SPACE_BYTES for b in data]
        inner = sum(before and not here for before, here in zip(space, space[1:]))
        table[index] = inner, not space[0], space[-1]
    return table


def chunk_word_counts(
    ids: np.ndarray, lengths: np.ndarray, seq_len: int, table: np.ndarray, block_tokens: int = 1 << 23
) -> np.ndarray:
    """[chunks] int32: the words starting in each chunk chunk_documents cuts. A word starts at a non-space
    byte after a space or the document's start; the ids' bytes concatenate to the document's, so a
    document's chunks sum to its whitespace-separated words (corpus.count_words)."""
    words = np.zeros(int((-(-lengths // (seq_len - 1))).sum()), dtype=np.int64)
    for where, chunk, position in _token_blocks(lengths, seq_len, block_tokens):
        rows = table[ids[where]]
        after_space = np.ones(len(rows), dtype=bool)  # a document starts after a space
        after_space[1:] = rows[:-1, 2].astype(bool)
        after_space[position == 0] = True
        starts = rows[:, 0] + (rows[:, 1].astype(bool) & after_space)
        if len(chunk):  # a block's chunks are consecutive
            counts = np.bincount(chunk - chunk[0], weights=starts).astype(np.int64)
            words[chunk[0] : chunk[0] + len(counts)] += counts
    return words.astype(np.int32)


def _chunk(tokens_dir: Path, seq_len: int, folder: Path, log: Callable[[str], None]) -> None:
    started = time.perf_counter()
    meta = {k: v for k, v in _check(tokens_dir).items() if k != "sha256"}
    for split in ("train", "dev"):
        ids = np.load(tokens_dir / f"{split}_ids.npy")
        lengths = np.load(tokens_dir / f"{split}_lengths.npy")
        chunks = chunk_documents(ids, lengths, seq_len)
        _save(folder, f"{split}.npy", chunks)
        meta[f"{split}_chunks"] = int(len(chunks))
        if split == "train":
            table = word_table(load_tokenizer(tokens_dir / "tokenizer.json"))
            words = chunk_word_counts(ids, lengths, seq_len, table)
            _save(folder, "train_words.npy", words)
            meta["train_words"] = int(words.sum(dtype=np.int64))
    for name in ("tokenizer.json", "token_counts.npy"):
        shutil.copyfile(tokens_dir / name, folder / name)
    meta["seq_len"] = seq_len
    meta["chunk_format"] = CHUNK_FORMAT
    log(
        f"data: cut {meta['train_chunks']:,} train and {meta['dev_chunks']:,} dev chunks of {seq_len} tokens "
        f"in {time.perf_counter() - started:.1f}s"
    )
    _write_meta(folder, meta)


def _load(folder: Path) -> PreparedData:
    meta = _check(folder)
    tokenizer_path = folder / "tokenizer.json"
    # Memory-mapped: a 100M-word corpus loads instantly and data-parallel workers share the pages.
    train = np.load(folder / "train.npy", mmap_mode="r")
    dev = np.load(folder / "dev.npy", mmap_mode="r")
    description = (
        f"{meta['description']} -> vocab {meta['tokenizer_vocab']:,}, "
        f"{human_count(meta['train_tokens'])} train tokens in {len(train):,} x {meta['seq_len']} chunks, "
        f"{len(dev):,} dev chunks"
    )
    return PreparedData(
        tokenizer=load_tokenizer(tokenizer_path),
        tokenizer_path=tokenizer_path,
        train=train,
        train_words=np.load(folder / "train_words.npy"),
        dev=dev,
        token_counts=np.load(folder / "token_counts.npy"),
        description=description,
        cache_path=folder,
    )


# ---------------------------------------------------------------- batches


class BatchStream:
    """Deterministic, resumable stream of micro-batches: each epoch a permutation of the chunks seeded
    by (seed, epoch); the last partial batch of an epoch is dropped."""

    def __init__(self, chunks: np.ndarray, batch_size: int, seed: int, words: np.ndarray | None = None):
        if len(chunks) < batch_size:
            raise UserError(
                f"The training data has {len(chunks):,} sequences, fewer than one batch of {batch_size}: "
                "lower train.global_batch or use a larger corpus."
            )
        self.chunks = chunks
        self.words = words  # [N] words of each chunk (PreparedData.train_words), if known
        self.last_words = 0  # words of the batch `next` served last
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_epoch = len(chunks) // batch_size
        self.epoch = 0
        self.index = 0  # next batch to serve within self.epoch
        self._order_epoch, self._order = -1, np.zeros(0, dtype=np.int64)

    def _order_for(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(len(self.chunks))
            self._order_epoch = epoch
        return self._order

    def next(self) -> torch.LongTensor:
        start = self.index * self.batch_size
        rows = self._order_for(self.epoch)[start : start + self.batch_size]
        batch = torch.from_numpy(np.asarray(self.chunks[rows], dtype=np.int64))
        if self.words is not None:
            self.last_words = int(self.words[rows].sum(dtype=np.int64))
        self.index += 1
        if (
            self.index == self.batches_per_epoch
        ):  # roll over now, so epoch always names the next batch's epoch
            self.epoch, self.index = self.epoch + 1, 0
        return batch

    def epoch_words(self, epoch: int) -> np.ndarray:
        """[batches_per_epoch] int64: the words of each batch of `epoch`, in the order they are served."""
        rows = self._order_for(epoch)[: self.batches_per_epoch * self.batch_size]
        return self.words[rows].astype(np.int64).reshape(self.batches_per_epoch, self.batch_size).sum(1)

    def words_before(self, epoch: int, index: int) -> int:
        """The words of every batch served before (epoch, index): the count of a run at that position."""
        return int(
            sum(self.epoch_words(e).sum() for e in range(epoch)) + self.epoch_words(epoch)[:index].sum()
        )

    def batches_for_words(self, amount: float) -> int:
        """How many batches from the start it takes to reach `amount` words."""
        served, epoch = 0, 0
        while True:
            cumulative = served + np.cumsum(self.epoch_words(epoch))
            if cumulative[-1] >= amount:
                return epoch * self.batches_per_epoch + int(np.searchsorted(cumulative, amount)) + 1
            if cumulative[-1] == served:
                raise UserError(
                    "The training sequences hold no words, so a budget in words is never reached."
                )
            served, epoch = int(cumulative[-1]), epoch + 1

    def _in_my_batches(self, d: dict) -> dict:
        """A position saved in micro-batches (before the stream served whole global batches), in mine,
        when it falls on one of my batch boundaries."""
        old = d.get("batch_size", self.batch_size)
        if (
            "serves" in d
            or old == self.batch_size
            or d.get("num_chunks") != len(self.chunks)
            or (d["index"] * old) % self.batch_size
        ):
            return d
        return {**d, "batch_size": self.batch_size, "index": d["index"] * old // self.batch_size}

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "index": self.index,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_chunks": len(self.chunks),
            "serves": "global batches",
        }

    def load_state_dict(self, d: dict) -> None:
        d = self._in_my_batches(d)
        for name, mine in [
            ("num_chunks", len(self.chunks)),
            ("batch_size", self.batch_size),
            ("seed", self.seed),
        ]:
            if d.get(name, mine) != mine:
                raise UserError(
                    f"The checkpoint's data position was saved with {name} {d[name]}, but this run has "
                    f"{mine}: resume with the same data and batch settings."
                )
        if not (0 <= d["index"] < self.batches_per_epoch and d["epoch"] >= 0):
            raise UserError(
                f"The checkpoint's data position (epoch {d['epoch']}, batch {d['index']}) is out of range."
            )
        self.epoch, self.index = int(d["epoch"]), int(d["index"])
