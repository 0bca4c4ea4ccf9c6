"""Disjoint equal-size teacher shards of a dataset."""

import numbers

import numpy as np


def partition(x, y, num_teachers, seed=None):
    """Splits records into `num_teachers` disjoint shards of equal size.

    `shards[t] = records[perm[t * n_per:(t + 1) * n_per]]` for a seeded
    permutation `perm` of the records, with `n_per = len(x) // num_teachers`; the
    `len(x) % num_teachers` records left over are dropped, so every teacher sees
    the same number of records and each record is in at most one shard.

    Args:
      x: array [n, ...] of records.
      y: array [n, ...] of their labels.
      num_teachers: positive int, at most `n`.
      seed: int seed of the permutation; None draws it from OS entropy.

    Returns:
      `(x_shards, y_shards)`: arrays [num_teachers, n_per, ...].

    Raises:
      ValueError: an argument is invalid; the message names it.
    """
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"Received an invalid value for `x`, expected a non-empty array of records. "
                         f"Received: x.shape={x.shape}")
    if y.ndim == 0 or len(y) != len(x):
        raise ValueError(f"Received an invalid value for `y`, expected one label per record of `x` "
                         f"({len(x)}). Received: y.shape={y.shape}")
    if isinstance(num_teachers, bool) or not isinstance(num_teachers, numbers.Integral) or num_teachers <= 0:
        raise ValueError(f"Received an invalid value for `num_teachers`, expected a positive integer. "
                         f"Received: num_teachers={num_teachers!r}")
    if num_teachers > len(x):
        raise ValueError(f"Received an invalid value for `num_teachers`, expected at most the number of "
                         f"records ({len(x)}) so that no shard is empty. Received: num_teachers={num_teachers}")
    n_per = len(x) // num_teachers
    keep = np.random.default_rng(seed).permutation(len(x))[: n_per * num_teachers]
    return (x[keep].reshape(num_teachers, n_per, *x.shape[1:]),
            y[keep].reshape(num_teachers, n_per, *y.shape[1:]))
