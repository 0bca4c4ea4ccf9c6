"""Pure tensor compression primitives: no Keras, no privacy."""

from dlens_tf.compression.lowrank import orthonormalize, power_step, random_basis
from dlens_tf.compression.randk import randk, randk_indices
from dlens_tf.compression.topk import stochastic_sign, topk_mask, topk_stochastic_sign

__all__ = [
    "orthonormalize", "power_step", "random_basis", "randk", "randk_indices",
    "stochastic_sign", "topk_mask", "topk_stochastic_sign",
]
