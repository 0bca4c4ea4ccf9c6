"""TopAgg as a tensorflow_privacy DPQuery, so TF Privacy's generic optimizers can use it."""

import tensorflow as tf
import tensorflow_privacy as tfp

from dlens_tf.compression import topk_stochastic_sign
from dlens_tf.compression.topk import validate_k
from dlens_tf.privacy.topagg import noisy_vote, topagg_dp_event, validate_topagg_args


class TopAggQuery(tfp.SumAggregationDPQuery):
    """TopAgg over records that are nests of tensors (e.g. per-example gradients).

    preprocess_record: the record's tensors, flattened and concatenated into one vector,
      become TopkStoSignGrad(vector, clip, k) (exactly k entries of +-1 over the whole nest).
    get_noised_result: vote(sum + N(0, sigma^2 I), beta * num_records), reshaped to the nest.
    Each call of get_noised_result is one Gaussian query with noise multiplier
    sigma / (2 sqrt(k)); its DpEvent says so.

    Args:
      k, sigma, beta, clip: as in `dlens_tf.TopAgg`.
      num_records: the (public) number of records per sample; the threshold is beta * num_records.
      seed: optional integer for reproducible randomness; None seeds from OS entropy.
    """

    def __init__(self, k, sigma, beta, num_records, clip=None, seed=None):
        validate_topagg_args(k, sigma, beta, clip)
        if isinstance(num_records, bool) or not isinstance(num_records, int) or num_records <= 0:
            raise ValueError(
                f"Received an invalid value for `num_records`, expected a positive integer. Received: num_records={num_records!r}"
            )
        self._k, self._sigma, self._beta, self._clip = k, float(sigma), float(beta), clip
        self._num_records = num_records
        with tf.init_scope():
            self._rng = (
                tf.random.Generator.from_non_deterministic_state() if seed is None else tf.random.Generator.from_seed(seed)
            )

    def preprocess_record(self, params, record):
        tensors = tf.nest.flatten(record)
        vector = tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1]) for t in tensors], axis=0)
        validate_k(self._k, vector.shape[0])
        signs = topk_stochastic_sign(vector[tf.newaxis], self._k, self._clip, self._rng.make_seeds(1)[:, 0])[0]
        sizes = [tf.size(t) for t in tensors]
        parts = tf.split(signs, sizes)
        return tf.nest.pack_sequence_as(record, [tf.reshape(p, tf.shape(t)) for p, t in zip(parts, tensors)])

    def get_noised_result(self, sample_state, global_state):
        tensors = tf.nest.flatten(sample_state)
        summed = tf.concat([tf.reshape(tf.cast(t, tf.float32), [-1]) for t in tensors], axis=0)
        votes, _ = noisy_vote(summed, self._sigma, self._beta * self._num_records, self._rng.make_seeds(1)[:, 0])
        parts = tf.split(votes, [tf.size(t) for t in tensors])
        result = tf.nest.pack_sequence_as(
            sample_state, [tf.cast(tf.reshape(p, tf.shape(t)), t.dtype) for p, t in zip(parts, tensors)]
        )
        return result, global_state, self.get_dp_event()

    def get_dp_event(self):
        """One Gaussian query with noise multiplier sigma / (2 sqrt(k))."""
        return topagg_dp_event(self._k, self._sigma, 1).event
