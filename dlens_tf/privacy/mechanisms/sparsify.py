"""DP-SGD with top-k or random-k sparsification of the update."""

import tensorflow as tf

from dlens_tf.compression import topk_mask
from dlens_tf.compression.randk import randk, randk_indices, scatter_columns
from dlens_tf.privacy.mechanisms.base import register
from dlens_tf.privacy.mechanisms.compressed import CompressedMechanism
from dlens_tf.privacy.mechanisms.topagg_sgd import k_from_rate, validate_rate


class _Sparsifier(CompressedMechanism):
    def __init__(self, l2_norm_clip=1.0, noise_multiplier=1.0, rate=0.1, noise_placement="after", error_feedback=False):
        super().__init__(l2_norm_clip, noise_multiplier, noise_placement, error_feedback)
        validate_rate(rate)
        self.rate = float(rate)

    def build(self, variable_shapes):
        super().build(variable_shapes)
        self.kept = k_from_rate(self.rate, self.dimension)

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate)
        return config


@register
class TopKMechanism(_Sparsifier):
    """DP-SGD keeping the k = round(rate * D) largest-magnitude coordinates of the update.

    after:  update = topk((sum_i clip(g_i) + N(0, (zC)^2 I_D)) / B).
    before: update = topk((sum_i topk(clip(g_i)) + N(0, (zC)^2 I_D)) / B).
      Per-example top-k keeps a subset of a vector's entries, so ||topk(g)|| <= ||g|| <= C:
      sensitivity C. The kept coordinates depend on private data, so the noise must cover all
      D coordinates; the final top-k is post-processing that makes the update sparse.

    Args:
      l2_norm_clip, noise_multiplier, noise_placement, error_feedback: see `CompressedMechanism`.
      rate: fraction of coordinates kept, in (0, 1].
    """

    name = "topk"

    def _topk(self, rows):
        return tf.where(topk_mask(rows, self.kept), rows, tf.zeros_like(rows))

    def contributions(self, clipped, seed):
        return self._topk(clipped) if self.noise_placement == "before" else clipped

    def compress(self, update, seed):
        return self._topk(update[None])[0]

    def decompress(self, noisy_average, seed):
        return self.compress(noisy_average, seed)


@register
class RandKMechanism(_Sparsifier):
    """DP-SGD keeping k = round(rate * D) coordinates drawn at random each step, shared by all examples.

    after:  update = S^T S (sum_i clip(g_i) + N(0, (zC)^2 I_D)) / B.
    before: update = S^T (sum_i S clip(g_i) + N(0, (zC)^2 I_k)) / B,
      with S the k x D selection of the step's coordinates (drawn from the step seed, never from
      data). ||S g|| <= ||g|| <= C: sensitivity C, and the noise is only drawn in the k kept
      coordinates. Both placements give the same distribution; "before" draws k instead of D
      normals.

    Args:
      l2_norm_clip, noise_multiplier, noise_placement, error_feedback: see `CompressedMechanism`.
      rate: fraction of coordinates kept, in (0, 1].
    """

    name = "randk"

    def contributions(self, clipped, seed):
        return randk(clipped, self.kept, seed)[0] if self.noise_placement == "before" else clipped

    def compress(self, update, seed):
        values, idx = randk(update[None], self.kept, seed)
        return scatter_columns(values[0], idx, self.dimension)

    def decompress(self, noisy_average, seed):
        return scatter_columns(noisy_average, randk_indices(self.dimension, self.kept, seed), self.dimension)
