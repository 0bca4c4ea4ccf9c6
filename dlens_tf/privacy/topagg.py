"""TopAgg (DataLens Algorithm 3): compress each contributor, sum, add Gaussian noise, vote.

One implementation, two front doors: the `TopAgg` Keras layer (this file) and
`TopAggQuery`, a tensorflow_privacy DPQuery (dp_query.py). Both call `compress` and
`noisy_vote` below and report `topagg_dp_event`.
"""

import math

import dp_accounting
import numpy as np
import tensorflow as tf
from tensorflow import keras

from dlens_tf.compression import rng, topk_stochastic_sign
from dlens_tf.compression.topk import validate_k


def validate_topagg_args(k, sigma, beta, clip):
    """Raise ValueError naming the first invalid TopAgg argument."""
    validate_k(k, None)
    if not isinstance(sigma, (int, float)) or isinstance(sigma, bool) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"Received an invalid value for `sigma`, expected a positive finite number. Received: sigma={sigma!r}")
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"Received an invalid value for `beta`, expected a number >= 0. Received: beta={beta!r}")
    if clip is not None and (
        not isinstance(clip, (int, float)) or isinstance(clip, bool) or not math.isfinite(clip) or clip <= 0
    ):
        raise ValueError(f"Received an invalid value for `clip`, expected a positive number or None. Received: clip={clip!r}")


def topagg_noise_multiplier(k, sigma):
    """Noise multiplier of one TopAgg query: two {-1,0,1} vectors with k non-zeros differ by <= 2 sqrt(k)."""
    return sigma / (2.0 * math.sqrt(k))


def topagg_dp_event(k, sigma, num_queries):
    """dp_accounting event of `num_queries` TopAgg record-queries (each one Gaussian query)."""
    if isinstance(num_queries, bool) or not isinstance(num_queries, int) or num_queries < 0:
        raise ValueError(
            f"Received an invalid value for `num_queries`, expected an integer >= 0. Received: num_queries={num_queries!r}"
        )
    gaussian = dp_accounting.GaussianDpEvent(topagg_noise_multiplier(k, sigma))
    return dp_accounting.SelfComposedDpEvent(gaussian, num_queries)


def compress(gradients, k, clip, seed):
    """TopkStoSignGrad on every contributor's vector. gradients: [contributors, queries, d]."""
    shape = tf.shape(gradients)
    flat = tf.reshape(gradients, [shape[0] * shape[1], shape[2]])
    return tf.reshape(topk_stochastic_sign(flat, k, clip, seed), shape)


def vote_agreement(gradients, k, clip, seed):
    """How much contributors agree, before noise: a diagnostic that releases nothing.

    gradients: [N, queries, *record_shape]. Returns (agreement, deterministic): agreement is the mean
    over queries of |sum of the N compressed votes| / N on each query's k strongest coordinates (1: all
    N voted the same sign on the same k coordinates; 0: their votes cancel); deterministic is the share
    of top-k entries with |g| >= the stochastic sign's scale min(max |g|, clip), whose sign is not random.
    """
    gradients = tf.convert_to_tensor(gradients, tf.float32)
    if gradients.shape.rank is None or gradients.shape.rank < 3:
        raise ValueError(f"Received an invalid value for `gradients`, expected shape [N, queries, *record_shape]. "
                         f"Received: shape={gradients.shape}")
    n, m = gradients.shape[0], gradients.shape[1]
    flat = tf.reshape(gradients, [n, m, -1])
    validate_topagg_args(k, 1.0, 0.0, clip)  # k and clip; this diagnostic adds no noise
    validate_k(k, flat.shape[2])
    votes = tf.reduce_sum(compress(flat, k, clip, tf.constant([seed, 1])), 0).numpy()
    strongest = np.sort(np.abs(votes), axis=1)[:, -k:] / n
    magnitudes = np.nan_to_num(np.abs(flat.numpy()), nan=0.0, posinf=np.inf)  # NaN counts as 0, as in compress
    kept = magnitudes >= np.sort(magnitudes, axis=2)[:, :, -k][..., None]
    finite_max = np.where(np.isinf(magnitudes), 0.0, magnitudes).max(axis=2, keepdims=True)
    scale = finite_max if clip is None else np.minimum(finite_max, clip)
    deterministic = (kept & (magnitudes >= scale)).sum() / kept.sum()
    return float(strongest.mean()), float(deterministic)


def noisy_vote(votes_sum, sigma, threshold, seed):
    """sign(V) where |V| > threshold else 0, with V = votes_sum + N(0, sigma^2)."""
    noisy = votes_sum + rng.normal(tf.shape(votes_sum), seed, stddev=sigma, dtype=votes_sum.dtype)
    return tf.where(tf.abs(noisy) > threshold, tf.sign(noisy), tf.zeros_like(noisy)), noisy


@keras.saving.register_keras_serializable(package="dlens_tf")
class TopAgg(keras.layers.Layer):
    """Differentially private aggregation of teacher gradients by top-k sign voting.

    output[j] = vote(sum_i TopkStoSignGrad(g[i, j], clip, k) + N(0, sigma^2 I), beta * N)
    where vote(v, t) = sign(v) where |v| > t, else 0, and N is the number of teachers.

    Every teacher contributes exactly k entries of +-1 per record, so each record-query is a
    Gaussian mechanism with noise multiplier sigma / (2 sqrt(k)); `dp_event(num_records)`
    returns the composition for that many records.

    Args:
      k: entries kept per teacher and record (1 <= k <= record size).
      sigma: standard deviation of the Gaussian noise added to the vote counts.
      beta: voting threshold as a fraction of the number of teachers (>= 0).
      clip: optional per-coordinate clip c of the stochastic sign's scale.
      seed: optional integer for a reproducible run; None seeds from OS entropy.

    Input shape:
      `[num_teachers, batch, *record_shape]` float gradients.
    Output shape:
      `[batch, *record_shape]` with values in {-1, 0, +1}.
    """

    def __init__(self, k, sigma, beta, clip=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        validate_topagg_args(k, sigma, beta, clip)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"Received an invalid value for `seed`, expected an integer or None. Received: seed={seed!r}")
        self.k, self.sigma, self.beta, self.clip, self.seed = k, float(sigma), float(beta), clip, seed
        self._rng = None

    def build(self, input_shape):
        input_shape = tf.TensorShape(input_shape)
        if input_shape.rank is None or input_shape.rank < 3:
            raise ValueError(
                f"TopAgg expects gradients shaped [num_teachers, batch, *record_shape]. Received: shape={input_shape}"
            )
        validate_k(self.k, input_shape[2:].num_elements())
        with tf.init_scope():
            if self.seed is None:
                self._rng = tf.random.Generator.from_non_deterministic_state()
            else:
                self._rng = tf.random.Generator.from_seed(self.seed)
        super().build(input_shape)

    def call(self, gradients):
        gradients = tf.convert_to_tensor(gradients, dtype=self.compute_dtype)
        return self.aggregate(gradients)[0]

    def aggregate(self, gradients, sigma=None):
        """Returns (votes, noisy_sums), both [batch, *record_shape]; noisy_sums are pre-threshold.

        `sigma` (a scalar, e.g. a `GeometricNoiseSchedule`'s value for this step) replaces the layer's
        sigma as the noise's standard deviation; the threshold stays beta * N. A Python number must be
        positive and finite (ValueError otherwise); a tensor is taken as it is, so compute it from a
        validated schedule.
        """
        if sigma is not None and not tf.is_tensor(sigma):
            validate_topagg_args(self.k, sigma, self.beta, self.clip)
        if not self.built:
            self.build(gradients.shape)
        shape = tf.shape(gradients)
        flat = tf.reshape(gradients, [shape[0], shape[1], -1])
        seeds = self._rng.make_seeds(2)
        summed = tf.reduce_sum(compress(flat, self.k, self.clip, seeds[:, 0]), axis=0)
        threshold = self.beta * tf.cast(shape[0], summed.dtype)
        votes, noisy = noisy_vote(summed, self.sigma if sigma is None else sigma, threshold, seeds[:, 1])
        return tf.reshape(votes, shape[1:]), tf.reshape(noisy, shape[1:])

    def dp_event(self, num_records):
        """The dp_accounting event of aggregating `num_records` records (one query each)."""
        return topagg_dp_event(self.k, self.sigma, num_records)

    def noise_only_keep_rate(self, num_teachers):
        """P(|N(0, sigma^2)| > beta * num_teachers): the share of coordinates whose clean vote sum is 0 that
        the vote keeps anyway. Times the record size, the votes per record that noise alone keeps."""
        if isinstance(num_teachers, bool) or not isinstance(num_teachers, (int, np.integer)) or num_teachers < 1:
            raise ValueError(f"Received an invalid value for `num_teachers`, expected a positive integer. "
                             f"Received: num_teachers={num_teachers!r}")
        return math.erfc(self.beta * num_teachers / (self.sigma * math.sqrt(2.0)))

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[1:]

    def get_config(self):
        config = super().get_config()
        config.update(k=self.k, sigma=self.sigma, beta=self.beta, clip=self.clip, seed=self.seed)
        return config
