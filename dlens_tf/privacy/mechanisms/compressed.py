"""Shared parts of the compressed DP-SGD mechanisms: noise placement and error feedback."""

import tensorflow as tf

from dlens_tf.privacy.mechanisms.base import Mechanism

PLACEMENTS = ("after", "before")


class CompressedMechanism(Mechanism):
    """DP-SGD whose update is compressed, with the Gaussian noise before or after compression.

    noise_placement="after": update = compress((sum_i clip(g_i) + N(0, (zC)^2 I_D)) / B).
      Compression is post-processing of the Gaussian mechanism: sensitivity C, accounting
      unchanged.
    noise_placement="before": each example's clipped gradient is compressed first, then summed,
      then noised (only in the compressed coordinates when they are data-independent). The
      sensitivity is the largest norm of a compressed contribution; every subclass's
      compressor is a contraction (||compress(g)|| <= ||g|| <= C), so it stays C.
    error_feedback (after only, our reading of the study's recommendation): the part of the
      noisy average the compressor dropped is added to the next step's noisy average
      (Seide et al., 2014; Karimireddy et al., 2019). It is a function of released noisy
      sums only, hence post-processing: no privacy cost. With "before" the residual would be
      per-example private data, so it is refused.

    Args:
      l2_norm_clip: C (> 0).
      noise_multiplier: z (>= 0); noise stddev z C.
      noise_placement: "after" or "before".
      error_feedback: bool, see above.
    """

    def __init__(self, l2_norm_clip=1.0, noise_multiplier=1.0, noise_placement="after", error_feedback=False):
        super().__init__(l2_norm_clip, noise_multiplier)
        if noise_placement not in PLACEMENTS:
            raise ValueError(
                f"Received an invalid value for `noise_placement`, expected one of {PLACEMENTS}. "
                f"Received: noise_placement={noise_placement!r}"
            )
        if not isinstance(error_feedback, bool):
            raise ValueError(f"Received an invalid value for `error_feedback`, expected a bool. Received: error_feedback={error_feedback!r}")
        if error_feedback and noise_placement == "before":
            raise ValueError(
                "Received an invalid value for `error_feedback`: the residual of compressing before the noise is private "
                "per-example data; use noise_placement='after'. Received: error_feedback=True, noise_placement='before'"
            )
        self.noise_placement, self.error_feedback = noise_placement, error_feedback

    def build(self, variable_shapes):
        super().build(variable_shapes)
        if self.error_feedback:
            self.residual = tf.Variable(tf.zeros([self.dimension]), trainable=False, name="residual")

    def compress(self, update, seed):
        """Compresses an averaged update [D] (subclasses); returns [D]."""
        raise NotImplementedError

    def release(self, noisy_sum, seed, normalizer):
        if self.noise_placement == "before":
            return self.decompress(noisy_sum / normalizer, seed)
        update = noisy_sum / normalizer
        if not self.error_feedback:
            return self.compress(update, seed)
        update = update + self.residual
        compressed = self.compress(update, seed)
        self.residual.assign(update - compressed)
        return compressed

    def decompress(self, noisy_average, seed):
        """Maps the noisy average of compressed contributions [m] back to an update [D]."""
        raise NotImplementedError

    def get_config(self):
        config = super().get_config()
        config.update(noise_placement=self.noise_placement, error_feedback=self.error_feedback)
        return config
