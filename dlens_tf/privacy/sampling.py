"""Batches drawn the way the accountant assumes: Poisson sampling, or fixed-size shuffled batches.

Poisson sampling (what `PoissonSampledDpEvent` accounts for): every step, every example joins
the batch independently with probability q = batch_size / num_examples, so the batch size is
random. To keep few distinct shapes, each batch is padded with zero rows up to a multiple of
`pad_to`, and a 0/1 mask marks the real rows; `DPModel` reads the mask as `sample_weight`, so
padding rows contribute nothing. Nothing is truncated: the sample is exactly Poisson.
"""

import math
import os

import numpy as np
import tensorflow as tf

SAMPLINGS = ("poisson", "shuffle")


def validate_batch(batch_size, num_examples):
    if isinstance(num_examples, bool) or not isinstance(num_examples, (int, np.integer)) or num_examples <= 0:
        raise ValueError(
            f"Received an invalid value for `num_examples`, expected a positive integer. Received: num_examples={num_examples!r}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"Received an invalid value for `batch_size`, expected a positive integer. Received: batch_size={batch_size!r}")
    if batch_size > num_examples:
        raise ValueError(
            f"Received an invalid value for `batch_size`, expected at most the dataset size num_examples={num_examples}. "
            f"Received: batch_size={batch_size}"
        )


def validate_sampling(sampling):
    if sampling not in SAMPLINGS:
        raise ValueError(f"Received an invalid value for `sampling`, expected one of {SAMPLINGS}. Received: sampling={sampling!r}")


def steps_per_epoch(batch_size, num_examples):
    """ceil(num_examples / batch_size): the number of steps one epoch of either sampler yields."""
    validate_batch(batch_size, num_examples)
    return math.ceil(num_examples / batch_size)


def private_batches(x, y, batch_size, sampling="poisson", seed=None, pad_to=32):
    """A tf.data.Dataset of one epoch of (x, y, mask) batches, redrawn each time it is iterated.

    Args:
      x, y: arrays with the examples on axis 0.
      batch_size: expected (poisson) or exact (shuffle; the last batch may be smaller) batch size.
      sampling: "poisson" (independent inclusion with q = batch_size / n each step,
        ceil(n / batch_size) steps per epoch) or "shuffle" (a permutation cut into batches).
      seed: optional integer for reproducible batches; None seeds from OS entropy.
      pad_to: Poisson batches are zero-padded up to a multiple of this (>= 1).

    Returns:
      tf.data.Dataset of (x_batch, y_batch, mask); mask is float32 1 for real rows, 0 for padding.
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"`x` and `y` must have the same number of examples. Received: {len(x)} and {len(y)}")
    num_examples = len(x)
    steps = steps_per_epoch(batch_size, num_examples)
    validate_sampling(sampling)
    if isinstance(pad_to, bool) or not isinstance(pad_to, int) or pad_to < 1:
        raise ValueError(f"Received an invalid value for `pad_to`, expected a positive integer. Received: pad_to={pad_to!r}")
    generator = np.random.default_rng(seed if seed is not None else int.from_bytes(os.urandom(8), "little"))
    q = batch_size / num_examples

    def batches():
        order = generator.permutation(num_examples) if sampling == "shuffle" else None
        for step in range(steps):
            if sampling == "shuffle":
                idx = order[step * batch_size:(step + 1) * batch_size]
                yield x[idx], y[idx], np.ones(len(idx), np.float32)
                continue
            idx = np.flatnonzero(generator.random(num_examples) < q)
            size = max(pad_to, -(-len(idx) // pad_to) * pad_to)
            mask = np.zeros(size, np.float32)
            mask[: len(idx)] = 1.0
            padded = np.concatenate([idx, np.zeros(size - len(idx), idx.dtype)])
            yield x[padded], y[padded], mask

    signature = (
        tf.TensorSpec((None,) + x.shape[1:], tf.as_dtype(x.dtype)),
        tf.TensorSpec((None,) + y.shape[1:], tf.as_dtype(y.dtype)),
        tf.TensorSpec((None,), tf.float32),
    )
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(2)
