"""TopAgg-SGD (DataLens Section 4.4): per-example gradients take the place of teacher gradients."""

import math

import tensorflow as tf

from dlens_tf.compression import topk_stochastic_sign
from dlens_tf.compression.topk import validate_k
from dlens_tf.privacy.mechanisms.base import Mechanism, _validate_positive, register


def k_from_rate(rate, dimension):
    """Entries kept out of `dimension` at compression rate `rate` (fraction kept), at least 1."""
    return max(1, min(dimension, int(round(rate * dimension))))


def validate_rate(rate):
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
        raise ValueError(f"Received an invalid value for `rate`, expected a fraction in (0, 1]. Received: rate={rate!r}")


@register
class TopAggMechanism(Mechanism):
    """update = vote(sum_i TopkStoSign(clip(g_i, C), k) + N(0, sigma^2 I), beta * B) in {-1, 0, 1}^D.

    Each example contributes a {-1, 0, +1} vector with exactly k non-zeros (top-k by magnitude of
    its whole flattened gradient, then stochastic sign), whatever its gradient; so the sum's L2
    sensitivity is ||v|| = sqrt(k) under add/remove-one (one such vector appears or vanishes) and
    max ||u - v|| = 2 sqrt(k) under replace-one (u = -v on a shared support). sigma = z sqrt(k),
    so the event is DataLens' TopAgg query with noise multiplier z (sigma / (2 sqrt(k)) for
    replace-one, as in `dlens_tf.privacy.topagg`).
    The vote threshold uses the expected batch size B (public), not the sampled count.
    The update is the vote itself, as in the paper: with `keras.optimizers.SGD(lr)` the step is
    theta <- theta - lr * vote (the learning rate scales the sign update).

    Args:
      l2_norm_clip: C; harmless here (top-k and sign ignore scale), kept for a uniform API.
      noise_multiplier: z (>= 0).
      rate: fraction of the D coordinates kept per example (k = round(rate * D), >= 1); or
      k: the number kept, overriding `rate`.
      beta: vote threshold as a fraction of the expected batch size (>= 0).
      sign_clip: optional per-coordinate clip c of the stochastic sign's scale.
    """

    name = "topagg"

    def __init__(self, l2_norm_clip=1.0, noise_multiplier=1.0, rate=0.01, k=None, beta=0.0, sign_clip=None):
        super().__init__(l2_norm_clip, noise_multiplier)
        validate_rate(rate)
        if k is not None:
            validate_k(k, None)
        _validate_positive("beta", beta, allow_zero=True)
        if sign_clip is not None:
            _validate_positive("sign_clip", sign_clip)
        self.rate, self.k, self.beta, self.sign_clip = float(rate), k, float(beta), sign_clip

    def build(self, variable_shapes):
        super().build(variable_shapes)
        self.kept = self.k if self.k is not None else k_from_rate(self.rate, self.dimension)
        validate_k(self.kept, self.dimension)

    def contribution_bound(self):
        return math.sqrt(self.kept)

    def contributions(self, clipped, seed):
        return topk_stochastic_sign(clipped, self.kept, self.sign_clip, seed)

    def release(self, noisy_sum, seed, normalizer):
        del seed
        threshold = self.beta * normalizer
        return tf.where(tf.abs(noisy_sum) > threshold, tf.sign(noisy_sum), tf.zeros_like(noisy_sum))

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, k=self.k, beta=self.beta, sign_clip=self.sign_clip)
        return config
