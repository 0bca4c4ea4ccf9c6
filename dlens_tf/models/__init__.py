"""Keras models with private training steps."""

from dlens_tf.models.base import PrivateModel

__all__ = ["PrivateModel"]
