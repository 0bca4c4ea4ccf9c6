"""Post-processing of synthetic data: keep the records a classifier trained on them finds most like their label.

A DP generator's records include some that look like another class, or like no class. Training
`utility_classifier` on all synthetic records for a few epochs and scoring every record by the
probability of its own label ranks them; keeping the best-scoring fraction of each class drops most
of the mislabelled ones. Only the synthetic records are used, so the filter is post-processing of the
DP output and costs no privacy.
"""

import math

import numpy as np
import tensorflow as tf
from tensorflow import keras

from dlens_tf.evaluation.utility import _check_int, _check_positive, _validate_images_labels, utility_classifier


def own_label_scores(x, y, num_classes=10, epochs=2, batch_size=512, learning_rate=1e-3, seed=None):
    """Each record's probability of its own label under `utility_classifier` trained (Adam) on all of them.

    Args:
      x, y: synthetic images `[n, H, W, C]` (uint8 in [0, 255] or floats in [0, 1]) and integer labels
        `[n]` in [0, num_classes).
      num_classes: number of classes.
      epochs, batch_size, learning_rate: the scoring classifier's Adam schedule.
      seed: optional integer for reproducible initialisation, dropout and shuffling.

    Returns:
      float32 `[n]`, each in [0, 1].
    """
    x, y = _validate_images_labels("x", "y", x, y, num_classes)
    _check_int("epochs", epochs, minimum=1)
    _check_int("batch_size", batch_size, minimum=1)
    _check_positive("learning_rate", learning_rate)
    model = utility_classifier(x.shape[1:], num_classes, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).batch(batch_size)
    model.fit(data, epochs=epochs, verbose=0)
    probabilities = model.predict(x, batch_size=2048, verbose=0)
    return probabilities[np.arange(len(y)), y].astype(np.float32)


def keep_best_per_class(scores, y, keep_fraction):
    """Sorted indices of the `ceil(keep_fraction * n_c)` highest-scoring records of each class c.

    Ties go to the earlier record; NaN scores rank below every number. A class with records keeps at
    least one; `keep_fraction=1` keeps everything.

    Args:
      scores: floats `[n]`.
      y: integer labels `[n]`.
      keep_fraction: a number in (0, 1].

    Returns:
      int64 indices into `scores`, ascending.
    """
    scores, y = np.asarray(scores), np.asarray(y)
    _check_keep_fraction(keep_fraction)
    if scores.ndim != 1 or y.shape != scores.shape:
        raise ValueError(
            "Received an invalid value for `scores`, expected one score per label, both shaped [n]. "
            f"Received: scores.shape={scores.shape}, y.shape={y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"Received an invalid value for `y`, expected integer labels. Received: dtype={y.dtype}")
    ranked = np.where(np.isnan(scores), -np.inf, scores.astype(np.float64))
    kept = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        order = np.argsort(-ranked[members], kind="stable")
        kept.append(members[order[: math.ceil(keep_fraction * len(members))]])
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)


def filter_by_own_label(x, y, keep_fraction, num_classes=10, epochs=2, batch_size=512, learning_rate=1e-3, seed=None):
    """Sorted indices of the records kept: `keep_best_per_class` of `own_label_scores`.

    Use `x[kept], y[kept]`. Arguments as in those two functions; `keep_fraction=1` returns every index
    without training.
    """
    _check_keep_fraction(keep_fraction)
    if keep_fraction == 1:
        _validate_images_labels("x", "y", x, y, num_classes)
        return np.arange(len(x), dtype=np.int64)
    scores = own_label_scores(x, y, num_classes, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                              seed=seed)
    return keep_best_per_class(scores, np.asarray(y), keep_fraction)


def _check_keep_fraction(value, name="keep_fraction"):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"Received an invalid value for `{name}`, expected a number in (0, 1]. Received: {name}={value!r}")
