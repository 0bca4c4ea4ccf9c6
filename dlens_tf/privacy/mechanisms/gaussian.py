"""Standard DP-SGD aggregation (Abadi et al., 2016)."""

from dlens_tf.privacy.mechanisms.base import Mechanism, register


@register
class GaussianMechanism(Mechanism):
    """update = (sum_i clip(g_i, C) + N(0, (z C)^2 I)) / normalizer.

    Sensitivity of the sum: C (add/remove-one), 2C (replace-one).

    Args:
      l2_norm_clip: C (> 0).
      noise_multiplier: z (>= 0).
    """

    name = "gaussian"
