"""DCASE metrics against sklearn and hand-computed cases; tables and the submission file."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, log_loss

from avsc.data.tau import LABELS
from avsc.evaluation import confusion, dcase_metrics, per_class_table, write_submission


def random_case(n=300, c=10, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 2.0 * np.eye(c)[y]
    p = np.exp(logits)
    return y, p / p.sum(1, keepdims=True)


def test_agrees_with_sklearn_where_they_agree():
    y, p = random_case()
    m = dcase_metrics(y, p)
    assert m["logloss_overall"] == pytest.approx(log_loss(y, p, labels=list(range(10))), rel=1e-9)
    assert m["accuracy_overall"] == pytest.approx(accuracy_score(y, p.argmax(1)))
    assert m["accuracy_classwise"] == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))
    per_class = [-np.log(p[y == k, k]).mean() for k in range(10)]
    assert m["logloss_classwise"] == pytest.approx(np.mean(per_class), rel=1e-9)
    assert m["logloss_classwise"] != pytest.approx(m["logloss_overall"], rel=1e-6)  # unbalanced


def test_hand_computed_case():
    y = np.array([0, 0, 1])
    p = np.array([[0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    m = dcase_metrics(y, p)
    l0 = (-math.log(0.8) - math.log(0.4)) / 2
    l1 = -math.log(0.7)
    assert m["logloss_classwise"] == pytest.approx((l0 + l1) / 2)
    assert m["logloss_overall"] == pytest.approx(
        (-math.log(0.8) - math.log(0.4) - math.log(0.7)) / 3
    )
    assert m["accuracy_overall"] == pytest.approx(2 / 3)
    assert m["accuracy_classwise"] == pytest.approx((0.5 + 1.0) / 2)


def test_probability_zero_for_the_true_class_is_clipped_not_infinite():
    y = np.array([0, 1])
    p = np.zeros((2, 10))
    p[0, 1] = 1.0  # true class 0 gets exactly 0
    p[1, 1] = 1.0  # a certain, correct prediction
    m = dcase_metrics(y, p)
    # clip to [1e-15, 1 - 1e-15], renormalise: p0 = 1e-15 / (1 - 1e-15 + 9e-15)
    s = (1 - 1e-15) + 9 * 1e-15
    wrong = -math.log(1e-15 / s)
    right = -math.log((1 - 1e-15) / s)
    assert m["logloss_overall"] == pytest.approx((wrong + right) / 2, rel=1e-12)
    assert math.isfinite(m["logloss_overall"]) and wrong == pytest.approx(34.5388, abs=1e-3)
    assert m["accuracy_overall"] == 0.5


def test_bad_input():
    with pytest.raises(ValueError, match="proba must be"):
        dcase_metrics([0, 1], np.ones((3, 10)) / 10)
    with pytest.raises(ValueError, match="labels must lie"):
        dcase_metrics([0, 12], np.ones((2, 10)) / 10)


def test_confusion_and_per_class_table():
    y, p = random_case(seed=1)
    np.testing.assert_array_equal(
        confusion(y, p), confusion_matrix(y, p.argmax(1), labels=range(10))
    )
    t = per_class_table(y, p, LABELS)
    assert list(t.scene_label) == list(LABELS) and t.segments.sum() == len(y)
    assert t.accuracy.mean() == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))


def test_submission_file(tmp_path):
    y, p = random_case(n=20, seed=2)
    names = [f"clip{i}_{i % 10}.wav" for i in range(20)]
    path = tmp_path / "sub.tsv"
    write_submission(path, names, p, LABELS)
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["filename", "scene_label", *LABELS]
    df = pd.read_csv(path, sep="\t")
    assert list(df.filename) == names
    assert list(df.scene_label) == [LABELS[k] for k in p.argmax(1)]
    np.testing.assert_allclose(df[list(LABELS)].to_numpy(), p, atol=1e-6)
