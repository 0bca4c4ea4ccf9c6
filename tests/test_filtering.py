"""dlens_tf.evaluation's own-label filter: which records it keeps, that it finds mislabelled ones, bad input."""

import math

import numpy as np
import pytest

from dlens_tf.data import load
from dlens_tf.evaluation import filter_by_own_label, keep_best_per_class, own_label_scores


@pytest.fixture(scope="module")
def digits():
    return load("digits")[0]  # the training split: 1497 uint8 images and their labels


def test_keeps_the_best_scores_of_each_class_ties_to_the_earlier_record_nan_last():
    scores = np.array([0.5, np.nan, 0.9, 0.5, 0.1, 0.7, 0.5, np.nan])
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    # Class 0 (records 0-3): 0.9 (2), then the tie 0.5 (0, 3) goes to 0; NaN (1) is last.
    np.testing.assert_array_equal(keep_best_per_class(scores, y, 0.5), [0, 2, 5, 6])
    np.testing.assert_array_equal(keep_best_per_class(scores, y, 0.75), [0, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(keep_best_per_class(scores, y, 1.0), np.arange(8))


@pytest.mark.parametrize("keep_fraction", [0.01, 0.3, 0.7, 0.999])
def test_each_class_keeps_the_ceiling_of_its_share(keep_fraction):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 5, size=203)
    y[y == 4] = 3  # class 4 empty: nothing to keep
    kept = keep_best_per_class(rng.random(203), y, keep_fraction)
    assert np.all(np.diff(kept) > 0)
    for label in range(5):
        assert np.sum(y[kept] == label) == math.ceil(keep_fraction * np.sum(y == label))


def test_filter_drops_most_mislabelled_records(digits):
    x, y = digits
    rng = np.random.default_rng(0)
    flipped = rng.random(len(y)) < 0.25
    noisy = np.where(flipped, (y + rng.integers(1, 10, size=len(y))) % 10, y)
    kept = filter_by_own_label(x, noisy, 0.7, epochs=15, batch_size=64, seed=0)
    dropped = np.setdiff1d(np.arange(len(y)), kept)
    assert abs(len(kept) - 0.7 * len(y)) <= 10
    # A quarter of the labels are wrong; the filter keeps few of them and drops mostly them.
    assert flipped[kept].mean() < 0.05 and flipped[dropped].mean() > 0.7, (flipped[kept].mean(), flipped[dropped].mean())
    scores = own_label_scores(x, noisy, epochs=15, batch_size=64, seed=0)
    assert scores.shape == (len(y),) and np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_array_equal(keep_best_per_class(scores, noisy, 0.7), kept)  # seeded: it repeats


def test_keeping_everything_trains_nothing(digits, monkeypatch):
    import dlens_tf.evaluation.filtering as filtering

    monkeypatch.setattr(filtering, "own_label_scores", lambda *a, **k: pytest.fail("scored with keep_fraction=1"))
    x, y = digits
    np.testing.assert_array_equal(filter_by_own_label(x, y, 1.0), np.arange(len(y)))


@pytest.mark.parametrize("keep_fraction", [0, -0.5, 1.01, float("nan"), True, "0.7", None])
def test_bad_fractions_are_rejected_before_any_training(digits, keep_fraction, monkeypatch):
    import dlens_tf.evaluation.filtering as filtering

    monkeypatch.setattr(filtering, "own_label_scores", lambda *a, **k: pytest.fail("trained before checking"))
    x, y = digits
    with pytest.raises(ValueError, match="keep_fraction"):
        filter_by_own_label(x, y, keep_fraction)
    with pytest.raises(ValueError, match="keep_fraction"):
        keep_best_per_class(np.zeros(3), np.zeros(3, np.int64), keep_fraction)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(scores=np.zeros(4)), "scores"),
        (dict(scores=np.zeros((3, 1))), "scores"),
        (dict(y=np.zeros(3)), "integer labels"),
    ],
)
def test_bad_scores_or_labels_are_rejected(change, match):
    args = dict(scores=np.zeros(3), y=np.zeros(3, np.int64), keep_fraction=0.5)
    with pytest.raises(ValueError, match=match):
        keep_best_per_class(**{**args, **change})


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(y=np.full(1497, 10)), "labels in"),
        (dict(x=np.zeros((1497, 8, 8))), "x"),
        (dict(epochs=0), "epochs"),
        (dict(learning_rate=float("inf")), "learning_rate"),
    ],
)
def test_bad_records_or_schedule_are_rejected(digits, change, match):
    x, y = digits
    with pytest.raises(ValueError, match=match):
        filter_by_own_label(**{**dict(x=x, y=y, keep_fraction=0.5), **change})
