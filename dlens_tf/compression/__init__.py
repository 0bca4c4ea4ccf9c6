"""Pure tensor compression primitives: no Keras, no privacy."""

from dlens_tf.compression.topk import stochastic_sign, topk_mask, topk_stochastic_sign

__all__ = ["stochastic_sign", "topk_mask", "topk_stochastic_sign"]

from dlens_tf.compression.lowrank import orthonormalize, power_step, random_basis  # noqa: E402
from dlens_tf.compression.randk import randk, randk_indices  # noqa: E402

__all__ += ["orthonormalize", "power_step", "random_basis", "randk", "randk_indices"]
