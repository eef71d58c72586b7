"""The text sentiment script runs in quick mode and writes sound results.

Needs the review polarity archive (``$DIFFSC_DATA``); skipped with the
loader's message without it. About 25 s on two cores.
"""

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from diffsc.datasets import load_review_polarity

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "text_sentiment.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("text_sentiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    try:
        load_review_polarity()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    script = _load_script()
    out = tmp_path_factory.mktemp("text-sentiment")
    script.main(["--quick", "--out", str(out)])
    with open(out / "text_sentiment.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return script, out, rows


def test_writes_every_file(quick):
    _, out, _ = quick
    for name in ("text_sentiment.csv", "text_sentiment.md", "text_sentiment.png"):
        assert (out / name).stat().st_size > 0, name
    text = (out / "text_sentiment.md").read_text()
    assert "quick run" in text and "Wall time" in text and "KL codes beat L1 codes" in text


def test_every_method_and_fold(quick):
    script, _, rows = quick
    assert {(int(r["fold"]), r["method"]) for r in rows} == {
        (fold, method) for fold in script.QUICK["folds"] for method in script.METHODS
    }
    assert len(rows) == len(script.QUICK["folds"]) * len(script.METHODS)
    for row in rows:
        assert 0.0 <= float(row["accuracy"]) <= 1.0
        assert float(row["seconds"]) >= 0.0


def test_above_chance(quick):
    # Each split scores 200 reviews, half positive: chance is 50% +- 3.5%. The
    # quick run (V = 300, K = 8) gives 61-77% for every method on both splits.
    script, _, rows = quick
    for method in script.METHODS:
        accuracy = [float(r["accuracy"]) for r in rows if r["method"] == method]
        assert np.mean(accuracy) > 0.55, method
    words = [float(r["accuracy"]) for r in rows if r["method"] == "bag of words"]
    assert min(words) > 0.65


def test_word_counts_use_training_documents_only():
    script = _load_script()
    train = ["good good film", "bad film", "good plot"]
    test = ["terrible terrible acting", "good"]
    x, x_test, words = script.word_counts(train, test, 2)
    # "good" is in 2 training documents and "film" in 2; "bad" and "plot" in 1.
    assert list(words) == ["film", "good"]
    assert x.tolist() == [[1, 2], [1, 0], [0, 1]]
    assert x_test.tolist() == [[0, 0], [0, 1]]  # words unseen in training are dropped


def test_empty_documents_get_the_prior_code():
    import torch

    script = _load_script()
    basis = torch.eye(3, 2, dtype=torch.float64)
    x = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    kl = script.codes(x, basis, "kl", 1e-2, 0.1)
    l1 = script.codes(x, basis, "l1", 1e-2, 0.1)
    assert kl[1].tolist() == [0.1, 0.1] and l1[1].tolist() == [0.0, 0.0]
    assert (kl[0] > 0).all()
