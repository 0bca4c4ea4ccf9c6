"""Keras models with private training steps."""

from dlens_tf.models.base import PrivateModel

__all__ = ["PrivateModel"]

from dlens_tf.models.dp_model import DPModel, make_private  # noqa: E402

__all__ += ["DPModel", "make_private"]
