"""A count-based peer for the zero-shot suites: an interpolated Kneser-Ney word n-gram model counted on
a training corpus, scoring minimal pairs by sentence log-probability.

    python bench/ngram_baseline.py --corpus ../shared/data/babylm-mini/train \
        --data ../shared/data/evaluation_data --suite blimp,supplement --limit 100 [--order 5] [--json OUT] \
        [--against runs/recipe-search/d128-v4k-s64 ...]

It reads the suites with mdlm-tui's own loader (the same items, the same --limit per UID) and prints
the macro accuracy over UIDs per suite, the number a small neural recipe has to beat. Words are
lower-cased tokens of letters, digits and apostrophes, and single punctuation marks; each corpus
line and each scored text is a sentence between <s> and </s>. An item with a context (EWoK) scores
log P(context + text) - log P(context). Ties count 1/k, as `mdlm-tui eval` counts them.

With --against RUN, each run's newest saved report of the suite with the same --limit is set beside
the n-gram: the run's macro minus the n-gram's, with a 95 % paired bootstrap interval over the items
(the same items in the same order, as `mdlm-tui compare` pairs two runs).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.suites import load_suite  # noqa: E402

WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")
BOS, EOS = "<s>", "</s>"
DISCOUNT = 0.75  # the usual single Kneser-Ney discount per order


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


class KneserNey:
    """Interpolated Kneser-Ney: the highest order from counts, the lower ones from continuation counts
    (how many distinct words precede an n-gram), each interpolated down to a uniform distribution."""

    def __init__(self, order: int):
        self.order = order
        self.counts = [Counter() for _ in range(order + 1)]  # [n][ngram] -> count (continuation below top)
        self.context_totals = [Counter() for _ in range(order + 1)]  # [n][history] -> sum of counts
        self.followers = [Counter() for _ in range(order + 1)]  # [n][history] -> distinct next words
        self.vocabulary: set[str] = set()

    def fit(self, sentences) -> KneserNey:
        top = self.order
        seen_before: dict[tuple, set] = defaultdict(set)  # lower-order n-gram -> distinct left words
        for sentence in sentences:
            tokens = [BOS] * (top - 1) + sentence + [EOS]
            self.vocabulary.update(sentence)
            for i in range(top - 1, len(tokens)):
                gram = tuple(tokens[i - top + 1 : i + 1])
                self.counts[top][gram] += 1
        for gram in self.counts[top]:  # continuation counts of every lower order
            for n in range(1, top):
                seen_before[gram[-n:]].add(gram[-n - 1])
        for gram, left in seen_before.items():
            self.counts[len(gram)][gram] = len(left)
        for n in range(1, top + 1):
            for gram, count in self.counts[n].items():
                self.context_totals[n][gram[:-1]] += count
                self.followers[n][gram[:-1]] += 1
        self.vocabulary.add(EOS)
        return self

    def probability(self, history: tuple, word: str) -> float:
        p = 1.0 / (len(self.vocabulary) + 1)  # the unknown word shares the floor
        for n in range(1, self.order + 1):
            context = history[len(history) - n + 1 :] if n > 1 else ()
            total = self.context_totals[n].get(context, 0)
            if total == 0:
                continue  # an unseen history: the lower order's estimate stands
            count = self.counts[n].get(context + (word,), 0)
            backoff = DISCOUNT * self.followers[n][context] / total
            p = max(count - DISCOUNT, 0) / total + backoff * p
        return p

    def log_prob(self, text: str) -> float:
        tokens = [BOS] * (self.order - 1) + words(text) + [EOS]
        return sum(
            math.log(self.probability(tuple(tokens[i - self.order + 1 : i]), tokens[i]))
            for i in range(self.order - 1, len(tokens))
        )


def corpus_sentences(path: Path):
    """Each line of a file, or of every *.train file of a BabyLM folder (every file when it has none)."""
    files = [path] if path.is_file() else sorted(path.glob("*.train")) or sorted(path.glob("*"))
    for file in files:
        with open(file, encoding="utf-8", errors="replace") as f:
            for line in f:
                if found := words(line):
                    yield found


def credit(scores: list[float]) -> float:
    best = max(scores)
    top = [i for i, score in enumerate(scores) if abs(best - score) <= 1e-9 * max(1.0, abs(best))]
    return 1.0 / len(top) if 0 in top else 0.0


def score_suite(model: KneserNey, suite) -> dict:
    per_uid: dict[str, list[float]] = defaultdict(list)
    for item in suite.items:
        base = model.log_prob(item.context) if item.context else 0.0
        texts = [f"{item.context} {text}" if item.context else text for text in item.texts()]
        per_uid[item.uid].append(credit([model.log_prob(text) - base for text in texts]))
    accuracy = {uid: sum(values) / len(values) for uid, values in per_uid.items()}
    return {
        "suite": suite.name,
        "macro": sum(accuracy.values()) / len(accuracy),
        "items": len(suite.items),
        "uids": len(accuracy),
        "per_uid": accuracy,
        "credits": dict(per_uid),
    }


def against(run: Path, result: dict, limit: int | None) -> str:
    """A run's newest report of the suite made with this --limit, minus the n-gram, paired."""
    from core.bootstrap import pairable, paired_difference
    from core.saved_reports import read_reports

    for report in read_reports(run):
        if report.suite != result["suite"] or (report.settings or {}).get("limit") != limit:
            continue
        credits = report.credits
        if not credits:
            return f"{run.name}: {100 * report.macro:.1f} % (its report holds no item credits)"
        diff, low, high = paired_difference(credits, result["credits"])
        how = "paired" if pairable(credits, result["credits"]) else "unpaired: other items"
        return (
            f"{run.name} (step {report.step}): {100 * report.macro:.1f} %, minus the n-gram "
            f"{100 * diff:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}] ({how})"
        )
    return f"{run.name}: no {result['suite']} report with limit {limit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, help="A corpus folder or file (as data.path).")
    parser.add_argument("--data", required=True, help="The BabyLM evaluation_data folder.")
    parser.add_argument("--suite", default="blimp,supplement")
    parser.add_argument("--limit", type=int, default=None, help="At most N items per UID.")
    parser.add_argument("--order", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--against", type=Path, nargs="*", default=[], help="Run folders to set beside it.")
    args = parser.parse_args()

    started = time.perf_counter()
    model = KneserNey(args.order).fit(corpus_sentences(Path(args.corpus)))
    counted = time.perf_counter() - started
    grams, vocabulary = len(model.counts[args.order]), len(model.vocabulary)
    print(f"{args.order}-gram: {grams:,} distinct, {vocabulary:,} words, counted in {counted:.0f} s")
    results = []
    suites = load_suite(args.suite, args.data, limit=args.limit, warn=lambda m: print(m, file=sys.stderr))
    for suite in suites:
        result = score_suite(model, suite)
        results.append(result)
        macro, uids, items = 100 * result["macro"], result["uids"], result["items"]
        print(f"{suite.name}: macro {macro:.1f} % over {uids} UIDs, {items:,} items")
        for run in args.against:
            print(f"  {against(run, result, args.limit)}")
    if args.json is not None:
        summary = {"order": args.order, "limit": args.limit, "results": results}
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
