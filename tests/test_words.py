"""Words seen: exact per chunk in the data cache, summed per step by the trainer, kept through a kill
and a resume; milestone checkpoints (train.save_at_words) and budgets in words."""

import json
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from core.checkpoint import latest_checkpoint, step_dirs
from core.config import (
    DataConfig,
    apply_overrides,
    load_config,
    milestone_name,
    parse_budget,
    parse_milestones,
)
from core.corpus import count_words, load_corpus
from core.dataset import BatchStream, _byte_level_decoder, prepare_data
from core.errors import UserError
from core.runs import read_jsonl, sha256_file
from core.specials import NUM_SPECIAL
from core.tokenizer import encode_documents
from tests.helpers import error_line, mdlm, run_status, start, wait_until

# Runs of spaces and tabs, leading and trailing blanks, non-ASCII letters cut across chunks, long
# documents: every way a word could be counted twice or not at all.
DOCUMENTS = [
    "Hello  world,\tthis is\na test  ",
    "  leading blanks and trailing ones  ",
    "one",
    "x " * 30 + "end",
    "naïve café — über  straße, Ærøskøbing ß ß ß",
    "Don't stop-believing!!! 42 3.14 e=mc^2\n(nested (parens)) [brackets] {braces}",
] + [f"Story {i}: the cat sat on the mat and the dog ran {'far ' * (i % 5)}away." for i in range(30)]

SMALL = ["--set", "train.threads=1", "--set", "train.dev_every=0", "--set", "train.log_every=1"]


def corpus_file(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "words.txt"
    path.write_text("\n\n".join(DOCUMENTS) + "\n", encoding="utf-8")
    return path


def data_config(tmp_path: Path, seq_len: int = 8) -> DataConfig:
    return DataConfig(
        path=str(corpus_file(tmp_path / "corpus")),
        vocab_size=300,
        seq_len=seq_len,
        dev_fraction=0,
        cache_dir=str(tmp_path / "cache"),
    )


def oracle_chunk_words(data, documents: list[str], seq_len: int) -> np.ndarray:
    """Words starting in each chunk, told apart from the word table: decode a document's first k chunks
    and count str.split() words; chunk k holds the words the k-th chunk adds."""
    _, lengths = encode_documents(data.tokenizer, documents)
    out, row = [], 0
    for n in lengths:
        before = 0
        for k in range(-(-int(n) // (seq_len - 1))):
            body = np.asarray(data.train[row : row + k + 1, 1:]).ravel()
            text = data.tokenizer.decode(body[body >= NUM_SPECIAL].tolist())
            out.append(len(text.split()) - before)
            before += out[-1]
        row += k + 1
    return np.asarray(out)


def test_each_chunk_holds_the_words_that_start_in_it(tmp_path):
    cfg = data_config(tmp_path)
    data = prepare_data(cfg, log=lambda line: None)
    documents = load_corpus(cfg).train
    assert data.train_words.shape == (len(data.train),)
    assert np.array_equal(data.train_words, oracle_chunk_words(data, documents, cfg.seq_len))
    assert data.train_words.sum() == count_words(documents) == sum(len(d.split()) for d in documents)


def test_alphabet_is_the_byte_level_pre_tokenizers():
    from tokenizers import pre_tokenizers

    decoder = _byte_level_decoder()
    assert set(decoder) == set(pre_tokenizers.ByteLevel.alphabet()) and sorted(decoder.values()) == list(
        range(256)
    )


def test_a_cache_without_word_counts_is_cut_again(tmp_path):
    cfg = data_config(tmp_path)
    first = prepare_data(cfg, log=lambda line: None)
    meta_path = first.cache_path / "meta.json"
    meta = json.loads(meta_path.read_text())  # as written before word counts existed
    del meta["chunk_format"], meta["train_words"], meta["sha256"]["train_words.npy"]
    (first.cache_path / "train_words.npy").unlink()
    meta_path.write_text(json.dumps(meta))
    lines = []
    again = prepare_data(cfg, log=lines.append)
    assert any("no word counts; cutting them again" in line for line in lines)
    assert np.array_equal(again.train_words, first.train_words) and np.array_equal(again.train, first.train)


def test_settings_parse_and_name_milestones():
    babylm = parse_milestones("babylm")
    names = [milestone_name(m) for m in babylm]
    assert names[:10] == [f"chck_{i}M" for i in range(1, 11)]
    assert names[10:19] == [f"chck_{i}M" for i in range(20, 101, 10)]
    assert names[19:] == [f"chck_{i}M" for i in range(200, 1001, 100)]
    assert parse_milestones("50K, 20k,20K") == [20_000, 50_000] and parse_milestones("") == []
    assert [milestone_name(m) for m in parse_milestones("1.5M,2500")] == ["chck_2500", "chck_1500K"]
    assert parse_budget("10M words") == (1e7, "words") and parse_budget("1 word") == (1, "words")


def test_a_words_budget_ends_at_the_first_step_at_or_past_it():
    words = np.arange(1, 42) % 7  # 41 chunks, 13 batches of 3 an epoch (two chunks dropped)
    stream = BatchStream(np.zeros((41, 4), dtype=np.int32), 3, seed=5, words=words)
    served, counts = 0, []
    for _ in range(40):  # three epochs and a bit, served batch by batch
        stream.next()
        served += stream.last_words
        counts.append(served)
    for amount in (1, counts[0], counts[0] + 1, counts[20], counts[39]):
        batches = stream.batches_for_words(amount)
        assert counts[batches - 1] >= amount and (batches == 1 or counts[batches - 2] < amount)
    assert BatchStream(stream.chunks, 3, seed=5, words=words).words_before(3, 1) == counts[39]
    cfg = apply_overrides(load_config("smoke"), ["train.budget=50 words"])
    from core.trainer import plan_steps

    assert plan_steps(cfg, 13, stream.batches_for_words).total_steps == stream.batches_for_words(50)


@pytest.mark.parametrize(
    "setting, words",
    [
        ("train.save_at_words=abc", "train.save_at_words"),
        ("train.budget=-5 words", "train.budget"),
        ("train.save_at_words=20K,0", "train.save_at_words"),
    ],
)
def test_bad_values_are_one_sentence(tmp_path, setting, words):
    error = error_line(mdlm("run", "--preset", "smoke", "--run-dir", tmp_path / "bad", "--set", setting))
    assert words in error
    assert not (tmp_path / "bad").exists()
    with pytest.raises(UserError):
        apply_overrides(load_config("smoke"), [setting])


# ---------------------------------------------------------------- training


def train_records(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["event"] == "train"]


@pytest.mark.slow
def test_train_records_count_the_words_of_the_chunks_consumed(tmp_path):
    cfg = data_config(tmp_path, seq_len=16)
    run_dir = tmp_path / "run"
    settings = [
        f"data.path={cfg.path}",
        f"data.cache_dir={cfg.cache_dir}",
        "data.vocab_size=300",
        "data.seq_len=16",
        "data.dev_fraction=0",
        "train.global_batch=8",
        "train.micro_batch=4",
        "train.budget=3 epochs",
        "train.checkpoint_every=1000",
    ]
    result = mdlm(
        "run", "--preset", "smoke", "--run-dir", run_dir, *SMALL, *[a for s in settings for a in ("--set", s)]
    )
    assert result.returncode == 0, result.stderr
    data = prepare_data(cfg, log=lambda line: None)
    chunk_words = oracle_chunk_words(data, load_corpus(cfg).train, 16)
    # The documented order: a permutation per epoch seeded by (seed, epoch), the last partial global batch
    # dropped.
    per_epoch = len(chunk_words) // 8 * 8
    order = np.concatenate(
        [np.random.default_rng([0, e]).permutation(len(chunk_words))[:per_epoch] for e in range(4)]
    )
    records = train_records(run_dir)
    assert len(records) * 8 > 2 * per_epoch  # into the third epoch at least
    expected = np.cumsum(chunk_words[order[: len(records) * 8]].reshape(-1, 8).sum(1))  # 8 sequences a step
    assert [r["words"] for r in records] == expected.tolist()
    assert run_status(run_dir)["words"] == expected[-1]
    assert "BabyLM" not in result.stdout


@pytest.mark.slow
def test_a_run_past_ten_epochs_says_so_once(tmp_path):
    cfg = data_config(tmp_path, seq_len=16)
    settings = [
        f"data.path={cfg.path}",
        f"data.cache_dir={cfg.cache_dir}",
        "data.vocab_size=300",
        "data.seq_len=16",
        "data.dev_fraction=0",
        "train.global_batch=32",
        "train.micro_batch=32",
        "train.budget=10.5 epochs",
    ]
    result = mdlm(
        "run",
        "--preset",
        "smoke",
        "--run-dir",
        tmp_path / "run",
        *SMALL,
        *[a for s in settings for a in ("--set", s)],
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if "BabyLM" in line]
    assert len(warnings) == 1 and "10.500 epochs" in warnings[0], warnings


def milestone_meta(run_dir: Path) -> dict:
    """Step, words and weights of each milestone (state.pt differs: it holds the time trained)."""
    metas = {
        d.name: json.loads((d / "meta.json").read_text()) for d in (run_dir / "checkpoints").glob("chck_*")
    }
    return {
        name: {
            "step": meta["step"],
            "words": meta["words"],
            **{k: v for k, v in meta["sha256"].items() if k.endswith(".safetensors")},
        }
        for name, meta in metas.items()
    }


@pytest.mark.slow
def test_milestones_are_written_once_through_a_kill_and_a_resume(tmp_path):
    # The smoke preset reads about 1,500 words a step: 10K at step 7, 30K at step 21, 40K near step 27.
    settings = [
        *SMALL,
        "--set",
        "train.budget=40K words",
        "--set",
        "train.save_at_words=10K,30K",
        "--set",
        "train.checkpoint_every=4",
        "--set",
        "train.keep_checkpoints=1",
    ]
    straight = tmp_path / "straight"
    assert mdlm("run", "--preset", "smoke", "--run-dir", straight, *settings).returncode == 0
    records = train_records(straight)
    assert records[-1]["words"] >= 40_000 > records[-2]["words"], (
        "the budget ends at the first step past 40K words"
    )
    expected = milestone_meta(straight)
    assert sorted(expected) == ["chck_10K", "chck_30K"]
    for name, meta in expected.items():  # written the first step at or past its milestone
        step, words = meta["step"], meta["words"]
        assert (
            words == records[step - 1]["words"] >= parse_milestones(name[5:])[0] > records[step - 2]["words"]
        )

    killed = tmp_path / "killed"
    proc = start("run", "--preset", "smoke", "--run-dir", killed, *settings)
    checkpoints = killed / "checkpoints"
    first = expected["chck_10K"]["step"]
    wait_until(
        lambda: (
            (checkpoints / "chck_10K").is_dir()
            and latest_checkpoint(checkpoints) is not None
            and int(latest_checkpoint(checkpoints).name[5:]) > first
        ),
        "a checkpoint after the first milestone",
    )
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (checkpoints / "chck_30K").exists(), (
        "the run passed its second milestone before it could be killed"
    )
    kept = (checkpoints / "chck_10K" / "meta.json").stat().st_ino

    resumed = mdlm("run", "--resume", "--run-dir", killed)
    assert resumed.returncode == 0, resumed.stderr
    assert milestone_meta(killed) == expected and resumed.stdout.count("milestone checkpoint") == 1
    assert (checkpoints / "chck_10K" / "meta.json").stat().st_ino == kept  # not rewritten
    assert [r["words"] for r in train_records(killed)] == [r["words"] for r in records]
    assert run_status(killed)["words"] == records[-1]["words"]
    # kept whatever train.keep_checkpoints says; `latest` names a step-N folder
    assert [d.name for d in step_dirs(straight / "checkpoints")] == [f"step-{records[-1]['step']}"]
    assert (checkpoints / "latest").read_text().strip() == f"step-{records[-1]['step']}"

    from core.evaluate import load_for_eval

    _, _, _, ckpt = load_for_eval(str(checkpoints / "chck_30K"), warn=lambda m: None)
    assert ckpt == checkpoints / "chck_30K"


@pytest.mark.slow
def test_a_run_from_before_words_resumes_counting_them_from_its_data_position(tmp_path, finished_smoke_run):
    run_dir = tmp_path / "old"
    subprocess.run(["cp", "-r", str(finished_smoke_run), str(run_dir)], check=True)
    folder = run_dir / "checkpoints" / "step-8"
    state = torch.load(folder / "state.pt", weights_only=True)
    del state["words"]
    torch.save(state, folder / "state.pt")
    meta = json.loads((folder / "meta.json").read_text())
    del meta["words"]
    meta["sizes"]["state.pt"] = (folder / "state.pt").stat().st_size
    meta["sha256"]["state.pt"] = sha256_file(folder / "state.pt")
    (folder / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(run_dir / "checkpoints" / "step-4")
    config = run_dir / "config.yaml"  # as written before the key existed
    config.write_text(config.read_text().replace("  save_at_words: null\n", ""))
    assert "save_at_words" not in config.read_text()
    words_at_8 = train_records(finished_smoke_run)[7]["words"]

    resumed = mdlm("run", "--resume", "--run-dir", run_dir, "--set", "train.budget=10 steps")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{words_at_8:,} words seen, counted from its data position" in resumed.stdout
    records = train_records(run_dir)
    assert [r["step"] for r in records] == list(range(1, 11))
    assert records[7]["words"] == words_at_8 < records[8]["words"] < records[9]["words"]
