import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models

import core.dataset as dataset
from core.config import DataConfig
from core.corpus import cache_root, load_corpus
from core.dataset import (
    BatchStream,
    chunk_documents,
    masking_counts,
    prepare_data,
    sequence_token_counts,
)
from core.errors import UserError
from core.masking import frequency_scores
from core.specials import BOS_ID, MASK_ID, NUM_SPECIAL, PAD_ID, SPECIAL_TOKENS
from core.tokenizer import (
    check_tokenizer,
    encode_documents,
    load_tokenizer,
    split_for_encoding,
    train_tokenizer,
)

VOCAB = 512


@pytest.fixture(scope="module")
def bible_slice() -> list[str]:
    return load_corpus(DataConfig(source="embedded", dev_fraction=0)).train[:120]


@pytest.fixture(scope="module")
def tokenizer(bible_slice) -> Tokenizer:
    return train_tokenizer(bible_slice, VOCAB)


def small_corpus(folder: Path, documents: int = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "corpus.txt"
    text = "\n\n".join(
        "\n".join(
            f"Line {j} of story {i}: the cat sat on the mat and the dog ran {'far ' * (i % 7)}away."
            for j in range(i % 9 + 1)
        )
        for i in range(documents)
    )
    path.write_text(text + "\n")
    return path


def data_config(tmp_path: Path, **overrides) -> DataConfig:
    settings = dict(
        path=str(tmp_path / "corpus" / "corpus.txt"),
        vocab_size=VOCAB,
        seq_len=16,
        cache_dir=str(tmp_path / "cache"),
    )
    settings.update(overrides)
    return DataConfig(**settings)


# ---------------------------------------------------------------- tokenizer


def test_specials_sit_at_ids_0_to_15(tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(NUM_SPECIAL))
    assert tokenizer.token_to_id("<mask>") == MASK_ID == 4 and tokenizer.token_to_id("<pad>") == PAD_ID == 3
    assert tokenizer.get_vocab_size() == VOCAB
    assert tokenizer.post_processor is None
    check_tokenizer(tokenizer)


def test_byte_level_round_trip_and_no_bos_added(tokenizer):
    text = "And God said, Let there be light: ünïcødé 漢字 🙂\n\ttabs"
    ids = tokenizer.encode(text).ids
    assert BOS_ID not in ids and tokenizer.decode(ids) == text


def test_corpus_text_never_becomes_special_ids(tokenizer):
    ids, lengths = encode_documents(tokenizer, ["wiki text with <unk> and <mask> inside"])
    assert ids.min() >= NUM_SPECIAL and lengths.tolist() == [len(ids)]
    assert MASK_ID in tokenizer.encode("a <mask> b").ids  # prompts may still name the mask token


def test_long_documents_encode_in_pieces_to_the_same_ids(tokenizer):
    document = "\n".join(
        f"line {i} ends in space \nand  {i} starts\n  with spaces\n\ttab" for i in range(3000)
    )
    pieces = split_for_encoding(document, piece_chars=200)
    assert len(pieces) > 100 and "".join(pieces) == document
    ids, _ = encode_documents(tokenizer, [document])
    tokenizer.encode_special_tokens = True
    try:
        assert ids.tolist() == tokenizer.encode(document).ids
    finally:
        tokenizer.encode_special_tokens = False


def test_load_and_check_tokenizer_errors(tmp_path, tokenizer):
    with pytest.raises(UserError, match="does not exist"):
        load_tokenizer(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match="not a valid tokenizer file"):
        load_tokenizer(tmp_path / "broken.json")
    tokenizer.save(str(tmp_path / "good.json"))
    assert load_tokenizer(tmp_path / "good.json").token_to_id("<mask>") == MASK_ID
    foreign = Tokenizer(models.BPE())
    foreign.add_special_tokens(["<pad>", "<unk>"])
    with pytest.raises(UserError, match="special token <unk> has id 1, expected id 0"):
        check_tokenizer(foreign)


def test_full_embedded_corpus_trains_in_seconds():
    documents = load_corpus(DataConfig(source="embedded")).train
    started = time.perf_counter()
    tok = train_tokenizer(documents, 4096)
    ids, _ = encode_documents(tok, documents)
    assert time.perf_counter() - started < 30
    assert len(ids) > 700_000


# ---------------------------------------------------------------- chunking and caching


def test_chunks_start_with_bos_are_right_padded_and_rebuild_each_document():
    lengths = np.array([0, 1, 15, 16, 40], dtype=np.int64)
    ids = np.arange(100, 100 + lengths.sum(), dtype=np.int32)
    chunks = chunk_documents(ids, lengths, seq_len=16)
    for block in (1 << 23, 7):  # small blocks exercise the blockwise path
        assert np.array_equal(chunk_documents(ids, lengths, 16, block_tokens=block), chunks)
    assert chunks.shape == (0 + 1 + 1 + 2 + 3, 16) and chunks.dtype == np.int32
    assert (chunks[:, 0] == BOS_ID).all()
    row, start = 0, 0
    for n in lengths:
        pieces = -(-n // 15)
        body = chunks[row : row + pieces, 1:]
        tokens = body[body != PAD_ID]
        assert np.array_equal(tokens, ids[start : start + n])
        row, start = row + pieces, start + n
    is_pad = chunks == PAD_ID
    assert (np.diff(is_pad.astype(int), axis=1) >= 0).all()  # once padding starts it never stops


def test_sequence_token_counts_count_bos_and_pads():
    lengths = np.array([3, 20, 1, 7, 15], dtype=np.int64)
    ids = (np.arange(lengths.sum()) % 40 + NUM_SPECIAL).astype(np.int32)
    chunks = chunk_documents(ids, lengths, seq_len=16)
    counts = sequence_token_counts(chunks, VOCAB)
    assert counts.dtype == np.int64 and counts.shape == (VOCAB,)
    assert np.array_equal(counts, np.bincount(chunks.ravel(), minlength=VOCAB))
    assert np.array_equal(sequence_token_counts(chunks, VOCAB, block_rows=2), counts)  # blockwise, same sums
    assert counts[BOS_ID] == len(chunks) and counts[PAD_ID] == np.count_nonzero(chunks == PAD_ID) > 0
    assert counts.sum() == chunks.size
    scores = frequency_scores(counts)
    assert scores[PAD_ID] == scores.min()  # rank 0: the pad is the most frequent id of a padded corpus


def test_prepare_data_chunks_and_counts(tmp_path):
    small_corpus(tmp_path / "corpus")
    data = prepare_data(data_config(tmp_path), log=lambda line: None)
    assert data.train.dtype == np.int32 and data.train.shape[1] == 16 and len(data.dev) > 0
    assert (data.train[:, 0] == BOS_ID).all() and (data.dev[:, 0] == BOS_ID).all()
    body = data.train[:, 1:]
    assert np.count_nonzero(body >= NUM_SPECIAL) == data.token_counts.sum()
    assert data.token_counts.shape == (VOCAB,) and data.token_counts[:NUM_SPECIAL].sum() == 0
    # Concatenating a document's chunks gives back its ids.
    corpus = load_corpus(data_config(tmp_path))
    first_ids = data.tokenizer.encode(corpus.train[0]).ids
    rows = -(-len(first_ids) // 15)
    recovered = data.train[:rows, 1:][data.train[:rows, 1:] != PAD_ID]
    assert recovered.tolist() == first_ids
    assert data.tokenizer_path == data.cache_path / "tokenizer.json"
    assert {p.name for p in data.cache_path.iterdir()} >= {
        "tokenizer.json",
        "train.npy",
        "dev.npy",
        "token_counts.npy",
        "meta.json",
    }
    assert "corpus.txt" in data.description
    # The released frequency table counts the padded sequences, <s> and pads included, computed on demand.
    train = np.asarray(data.train)
    assert np.array_equal(data.sequence_counts, np.bincount(train.ravel(), minlength=VOCAB))
    assert data.sequence_counts[BOS_ID] == len(train) and data.sequence_counts[PAD_ID] > 0
    assert np.array_equal(data.sequence_counts[NUM_SPECIAL:], data.token_counts[NUM_SPECIAL:])
    assert masking_counts(data, "sequence") is data.sequence_counts  # cached after the first use
    assert masking_counts(data, "maskable") is data.token_counts
    with pytest.raises(ValueError, match="Unknown masking statistics"):
        masking_counts(data, "global")
    assert "sequence_counts" not in {p.stem for p in data.cache_path.iterdir()}  # nothing new in the cache


def test_second_prepare_uses_the_cache_without_retraining(tmp_path, monkeypatch):
    small_corpus(tmp_path / "corpus")
    first = prepare_data(data_config(tmp_path), log=lambda line: None)

    def no_training(*args, **kwargs):
        raise AssertionError("retrained the tokenizer")

    monkeypatch.setattr(dataset, "train_tokenizer", no_training)
    lines = []
    second = prepare_data(data_config(tmp_path), log=lines.append)
    assert any("using cached" in line for line in lines)
    assert np.array_equal(first.train, second.train) and np.array_equal(first.dev, second.dev)
    assert np.array_equal(first.token_counts, second.token_counts) and first.cache_path == second.cache_path
    # A new seq_len re-chunks the cached ids: still no training.
    longer = prepare_data(data_config(tmp_path, seq_len=32), log=lambda line: None)
    assert longer.train.shape[1] == 32 and longer.token_counts.sum() == first.token_counts.sum()
    assert not [p for p in Path(tmp_path / "cache").rglob(".*")]  # no temporary folders left behind


def test_cache_is_rebuilt_when_vocab_or_corpus_changes(tmp_path):
    path = small_corpus(tmp_path / "corpus")
    first = prepare_data(data_config(tmp_path), log=lambda line: None)
    bigger_vocab = prepare_data(data_config(tmp_path, vocab_size=VOCAB + 64), log=lambda line: None)
    assert bigger_vocab.cache_path != first.cache_path
    path.write_text(path.read_text() + "\n\nA brand new document about zebras.\n")
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    lines = []
    edited = prepare_data(data_config(tmp_path), log=lines.append)
    assert edited.cache_path != first.cache_path and not any("using cached" in line for line in lines)


def test_damaged_cache_is_rebuilt(tmp_path):
    small_corpus(tmp_path / "corpus")
    first = prepare_data(data_config(tmp_path), log=lambda line: None)
    expected = np.array(first.train)
    damaged = first.cache_path / "train.npy"
    damaged.unlink()  # replace, not truncate: truncating a memory-mapped file would crash this process
    damaged.write_bytes(b"garbage")
    lines = []
    again = prepare_data(data_config(tmp_path), log=lines.append)
    assert any("rebuilding" in line for line in lines) and np.array_equal(expected, again.train)


def test_cache_root_order(tmp_path, monkeypatch):
    assert cache_root(DataConfig(cache_dir=str(tmp_path))) == tmp_path
    monkeypatch.setenv("MDLM_TUI_CACHE", str(tmp_path / "env"))
    assert cache_root(DataConfig()) == tmp_path / "env"
    monkeypatch.delenv("MDLM_TUI_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(DataConfig()) == tmp_path / "xdg" / "mdlm-tui"


def test_babylm_mini_slice_prepares(shared_data, tmp_path):
    # The first lines of each file, laid out the same way: the real layout at a tenth of the time.
    for split in ("train", "dev"):
        for source in sorted((shared_data / "babylm-mini" / split).iterdir()):
            head = source.read_text(encoding="utf-8").split("\n")[: 1500 if split == "train" else 150]
            (tmp_path / "mini" / split).mkdir(parents=True, exist_ok=True)
            (tmp_path / "mini" / split / source.name).write_text("\n".join(head), encoding="utf-8")
    cfg = DataConfig(
        path=str(tmp_path / "mini"), vocab_size=VOCAB, seq_len=64, cache_dir=str(tmp_path / "cache")
    )
    data = prepare_data(cfg, log=lambda line: None)
    assert "4 files" in data.description and len(data.train) > 1000 and len(data.dev) > 50
    assert np.count_nonzero(data.train[:, 1:] >= NUM_SPECIAL) == data.token_counts.sum()
    scores = frequency_scores(masking_counts(data, "sequence"))
    assert scores[PAD_ID] == scores.min()  # as in the released code, the pad takes rank 0


# ---------------------------------------------------------------- batches


def chunks_for_stream(n: int = 10, seq_len: int = 4) -> np.ndarray:
    return np.arange(n * seq_len, dtype=np.int32).reshape(n, seq_len)


def test_batch_stream_is_deterministic_and_drops_the_partial_batch():
    a, b = BatchStream(chunks_for_stream(), 3, seed=7), BatchStream(chunks_for_stream(), 3, seed=7)
    assert a.batches_per_epoch == 3
    first = [a.next() for _ in range(6)]
    assert all(torch.equal(x, b.next()) for x in first)
    assert first[0].dtype == torch.long and first[0].shape == (3, 4)
    rows_epoch0 = torch.cat(first[:3])[:, 0].tolist()
    assert len(set(rows_epoch0)) == 9 and a.epoch == 2 and a.index == 0
    assert torch.cat(first[:3]).tolist() != torch.cat(first[3:]).tolist()  # a new permutation each epoch
    other = BatchStream(chunks_for_stream(), 3, seed=8)
    assert not all(torch.equal(x, other.next()) for x in first[:3])


def test_batch_stream_resumes_across_an_epoch_boundary():
    straight = BatchStream(chunks_for_stream(), 3, seed=1)
    expected = [straight.next() for _ in range(8)]
    interrupted = BatchStream(chunks_for_stream(), 3, seed=1)
    for _ in range(2):
        interrupted.next()
    state = interrupted.state_dict()
    resumed = BatchStream(chunks_for_stream(), 3, seed=1)
    resumed.load_state_dict(state)
    assert all(torch.equal(x, resumed.next()) for x in expected[2:])


def test_batch_stream_refuses_too_little_data_and_mismatched_state():
    with pytest.raises(UserError, match="fewer than one batch of 11"):
        BatchStream(chunks_for_stream(10), 11, seed=0)
    state = BatchStream(chunks_for_stream(10), 3, seed=0).state_dict()
    with pytest.raises(UserError, match="batch_size 3, but this run has 2"):
        BatchStream(chunks_for_stream(10), 2, seed=0).load_state_dict(state)
