"""Pure tensor compression primitives: no Keras, no privacy."""

from dlens_tf.compression.topk import stochastic_sign, topk_mask, topk_stochastic_sign

__all__ = ["stochastic_sign", "topk_mask", "topk_stochastic_sign"]
