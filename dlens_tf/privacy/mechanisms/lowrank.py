"""DP-SGD with PowerSGD-style rank reduction of every weight matrix's update."""

import math

import tensorflow as tf

from dlens_tf.compression import rng
from dlens_tf.compression.lowrank import as_matrix, power_step, project, random_basis, validate_rank
from dlens_tf.privacy.mechanisms.base import register
from dlens_tf.privacy.mechanisms.compressed import CompressedMechanism


@register
class LowRankMechanism(CompressedMechanism):
    """DP-SGD whose update of each variable of rank >= 2 (viewed as [rows, cols]) has rank <= r.

    Vectors (biases) are never compressed.
    after:  M = (sum_i clip(g_i) + N(0, (zC)^2 I_D)) / B per variable; one PowerSGD power
      iteration warm-started from the previous step's factor: P = orth(M Q), Q <- M^T P,
      update = P Q^T. Post-processing: sensitivity C, accounting unchanged. Q is a variable of
      the mechanism (a function of released updates only).
    before: a fresh orthonormal basis V [cols, r] per step and variable, drawn from the step
      seed (data-independent); each example contributes its factors G_i V ([rows, r]) and its
      vectors. Projection onto an orthonormal basis is a contraction (||G V||_F <= ||G||_F),
      so ||contribution|| <= C: sensitivity C. Noise is drawn on the factors only (rows * r
      per matrix instead of rows * cols); update = (noisy factors) V^T / B.

    Args:
      l2_norm_clip, noise_multiplier, noise_placement, error_feedback: see `CompressedMechanism`.
      rank: r >= 1 (capped at min(rows, cols) per matrix).
    """

    name = "lowrank"

    def __init__(self, l2_norm_clip=1.0, noise_multiplier=1.0, rank=1, noise_placement="after", error_feedback=False):
        super().__init__(l2_norm_clip, noise_multiplier, noise_placement, error_feedback)
        validate_rank(rank)
        self.rank = rank

    def build(self, variable_shapes):
        super().build(variable_shapes)
        self.matrices = []  # (rows, cols, r) or None per variable
        for shape in self.variable_shapes:
            if len(shape) < 2:
                self.matrices.append(None)
                continue
            rows, cols = as_matrix(shape)
            self.matrices.append((rows, cols, min(self.rank, rows, cols)))
        if self.noise_placement == "after":
            self.warm_start = [
                None if m is None else tf.Variable(rng.normal([m[1], m[2]], [i, 7]), trainable=False, name=f"q_{i}")
                for i, m in enumerate(self.matrices)
            ]

    def _bases(self, seed):
        return [None if m is None else random_basis(m[1], m[2], seed + [0, 1000 * i]) for i, m in enumerate(self.matrices)]

    def contributions(self, clipped, seed):
        if self.noise_placement == "after":
            return clipped
        batch = tf.shape(clipped)[0]
        parts = []
        for part, m, basis in zip(self._split_rows(clipped), self.matrices, self._bases(seed)):
            if m is None:
                parts.append(part)
            else:
                factor = project(tf.reshape(part, [batch, m[0], m[1]]), basis)
                parts.append(tf.reshape(factor, [batch, m[0] * m[2]]))
        return tf.concat(parts, axis=1)

    def _split_rows(self, rows):
        return tf.split(rows, [math.prod(s) for s in self.variable_shapes], axis=-1)

    def decompress(self, noisy_average, seed):
        sizes = [math.prod(s) if m is None else m[0] * m[2] for s, m in zip(self.variable_shapes, self.matrices)]
        parts = []
        for part, m, basis in zip(tf.split(noisy_average, sizes), self.matrices, self._bases(seed)):
            parts.append(part if m is None else tf.reshape(tf.matmul(tf.reshape(part, [m[0], m[2]]), basis, transpose_b=True), [-1]))
        return tf.concat(parts, axis=0)

    def compress(self, update, seed):
        parts = []
        for part, m, q in zip(self._split_rows(update), self.matrices, self.warm_start):
            if m is None:
                parts.append(part)
                continue
            p, q_new = power_step(tf.reshape(part, [m[0], m[1]]), q)
            q.assign(q_new)
            parts.append(tf.reshape(tf.matmul(p, q_new, transpose_b=True), [-1]))
        return tf.concat(parts, axis=0)

    def get_config(self):
        config = super().get_config()
        config.update(rank=self.rank)
        return config
