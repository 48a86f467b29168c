import json
import socket
from pathlib import Path

import pytest

from core.config import DataConfig
from core.corpus import count_words, detect_source, hold_out, load_corpus, split_documents
from core.errors import UserError


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_embedded_bible_loads_offline_in_canonical_order(offline):
    corpus = load_corpus(DataConfig(source="embedded"))
    assert count_words(corpus.train) + count_words(corpus.dev) >= 500_000
    assert len(corpus.train) + len(corpus.dev) == 1189  # chapters of the KJV
    assert corpus.train[0].startswith("In the beginning God created the heaven and the earth.\nAnd the earth")
    assert corpus.train[-1].startswith("And he shewed me a pure river of water of life")  # Revelation 22
    assert 50 <= len(corpus.dev) <= 70
    assert any("Jesus" in chapter for chapter in corpus.dev) and any(
        "Moses" in chapter for chapter in corpus.dev
    )
    assert corpus.identity.startswith("embedded:") and "Bible" in corpus.description


def test_babylm_train_folder_finds_sibling_dev(shared_data):
    corpus = load_corpus(DataConfig(source="babylm", path=str(shared_data / "babylm-mini" / "train")))
    assert "4 files" in corpus.description and "dev: 4 files" in corpus.description
    assert 1_100_000 < count_words(corpus.train) < 1_250_000
    assert 50_000 < count_words(corpus.dev) < 80_000
    assert any("Once upon a time" in doc or "king" in doc for doc in corpus.dev)


def test_babylm_root_folder_and_auto_detection(shared_data):
    root = shared_data / "babylm-mini"
    assert detect_source(str(root)) == "babylm" and detect_source(str(root / "train")) == "babylm"
    by_root = load_corpus(DataConfig(path=str(root)))
    by_train = load_corpus(DataConfig(path=str(root / "train")))
    assert by_root.identity == by_train.identity and len(by_root.dev) == len(by_train.dev)


def test_babylm_root_with_train_10m_and_dev(tmp_path):
    write(tmp_path / "train_10M" / "a.train", "one two three\nfour\n\nfive six\n")
    write(tmp_path / "dev" / "a.dev", "seven eight\n")
    write(tmp_path / "test" / "a.test", "nine\n")
    corpus = load_corpus(DataConfig(path=str(tmp_path)))
    assert corpus.train == ["one two three\nfour", "five six"]
    assert corpus.dev == ["seven eight"]
    assert "train_10M" in corpus.description


def test_babylm_2023_layout(tmp_path):
    write(tmp_path / "babylm_100M" / "a.train", "old release text\n")
    write(tmp_path / "babylm_dev" / "a.dev", "old dev\n")
    corpus = load_corpus(DataConfig(source="babylm", path=str(tmp_path / "babylm_100M")))
    assert corpus.train == ["old release text"] and corpus.dev == ["old dev"]


def test_babylm_refuses_two_sizes(tmp_path):
    write(tmp_path / "train_10M" / "a.train", "small\n")
    write(tmp_path / "train_100M" / "a.train", "large\n")
    with pytest.raises(UserError, match="both train_100M and train_10M.*set data.path"):
        load_corpus(DataConfig(source="babylm", path=str(tmp_path)))


def test_babylm_preset_without_path_explains_what_to_set():
    with pytest.raises(UserError) as info:
        load_corpus(DataConfig(source="babylm", path=None))
    assert str(info.value) == (
        "This preset trains on a BabyLM corpus: set data.path to its train folder, "
        "e.g. --set data.path=/data/babylm/train_100M."
    )


def test_text_folder_blank_lines_separate_documents(tmp_path):
    write(tmp_path / "b.txt", "second file first doc\n\n\n   \nsecond file second doc\n")
    write(tmp_path / "a" / "nested.md", "  indented line   \ncontinues here\n\nnext doc\n")
    write(tmp_path / "notes.csv", "not,text\n")
    write(tmp_path / ".hidden" / "x.txt", "hidden\n")
    corpus = load_corpus(DataConfig(source="text", path=str(tmp_path), dev_fraction=0))
    assert corpus.train == [
        "  indented line\ncontinues here",
        "next doc",
        "second file first doc",
        "second file second doc",
    ]
    assert corpus.dev == [] and "no dev split" in corpus.description


def test_text_dev_path_and_held_out_dev(tmp_path):
    docs = "\n\n".join(f"document number {i}" for i in range(40))
    write(tmp_path / "train" / "c.txt", docs)
    write(tmp_path / "dev.txt", "held apart\n")
    explicit = load_corpus(DataConfig(path=str(tmp_path / "train"), dev_path=str(tmp_path / "dev.txt")))
    assert len(explicit.train) == 40 and explicit.dev == ["held apart"]
    held = load_corpus(DataConfig(path=str(tmp_path / "train"), dev_fraction=0.1))
    assert held.dev == ["document number 9", "document number 19", "document number 29", "document number 39"]
    assert len(held.train) == 36 and not set(held.dev) & set(held.train)


def test_few_documents_hold_out_their_last_lines():
    train, dev = hold_out(["\n".join(f"a{i}" for i in range(100)), "b0\nb1"], 0.05)
    assert train[0].endswith("a94") and dev[0].startswith("a95") and dev[1] == "b1" and train[1] == "b0"


def test_invalid_utf8_is_replaced_not_fatal(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    corpus = load_corpus(DataConfig(path=str(tmp_path / "latin1.txt"), dev_fraction=0))
    assert corpus.train == ["caf\ufffd au lait"]


def test_hf_local_jsonl_parquet_and_saved_datasets(tmp_path, offline):
    import datasets

    rows = [{"text": f"Row {i} has words.\nAnd a second line.", "n": i} for i in range(60)]
    with open(tmp_path / "rows.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "rows.parquet"))
    splits = datasets.DatasetDict(
        train=datasets.Dataset.from_list(rows), validation=datasets.Dataset.from_list(rows[:3])
    )
    splits.save_to_disk(str(tmp_path / "saved"))
    cache = str(tmp_path / "cache")

    jsonl = load_corpus(
        DataConfig(source="hf", path=str(tmp_path / "rows.jsonl"), cache_dir=cache, dev_fraction=0.05)
    )
    assert len(jsonl.train) == 57 and len(jsonl.dev) == 3 and jsonl.train[0] == rows[0]["text"]
    parquet = load_corpus(DataConfig(path="hf:" + str(tmp_path / "rows.parquet"), cache_dir=cache))
    assert parquet.train == jsonl.train
    saved = load_corpus(DataConfig(source="hf", path=str(tmp_path / "saved"), cache_dir=cache))
    assert len(saved.train) == 60 and saved.dev == [r["text"] for r in rows[:3]]
    assert "validation split" in saved.description


def test_hf_unknown_column_lists_the_columns(tmp_path):
    with open(tmp_path / "rows.jsonl", "w") as f:
        f.write(json.dumps({"body": "hello", "n": 1}) + "\n")
    with pytest.raises(UserError, match=r"no column 'text' \(it has body, n\).*data.hf_text_field"):
        load_corpus(DataConfig(source="hf", path=str(tmp_path / "rows.jsonl"), cache_dir=str(tmp_path / "c")))


def test_auto_detection(tmp_path):
    assert detect_source(None) == "embedded"
    assert detect_source("hf:wikitext") == "hf"
    assert detect_source(str(write(tmp_path / "plain.txt", "x"))) == "text"
    assert detect_source(str(write(tmp_path / "bl" / "a.train", "x").parent)) == "babylm"
    assert detect_source(str(tmp_path)) == "text"  # a folder that only holds a BabyLM folder below it


def test_missing_path_names_it(tmp_path):
    missing = str(tmp_path / "nowhere")
    for source in ("auto", "text", "babylm"):
        with pytest.raises(UserError, match="nowhere does not exist"):
            load_corpus(DataConfig(source=source, path=missing))
    with pytest.raises(UserError, match="dev_path .*nowhere does not exist"):
        load_corpus(DataConfig(path=str(write(tmp_path / "a.txt", "x")), dev_path=missing))


def test_folder_without_text_files(tmp_path):
    write(tmp_path / "data.csv", "a,b\n")
    with pytest.raises(UserError, match=r"No text files .* in .*: point data.path"):
        load_corpus(DataConfig(source="text", path=str(tmp_path)))
    with pytest.raises(UserError, match="No \\*.train files"):
        load_corpus(DataConfig(source="babylm", path=str(tmp_path)))


def test_empty_corpus(tmp_path):
    write(tmp_path / "blank.txt", "\n   \n\t\n")
    with pytest.raises(UserError, match="has no words"):
        load_corpus(DataConfig(path=str(tmp_path)))


def test_split_documents_and_count_words():
    assert split_documents("a b\n\nc  \n \n\nd\n") == ["a b", "c", "d"]
    assert count_words(["one two  three", "", " four\n\tfive "]) == 5
