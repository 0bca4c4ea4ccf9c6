"""Pixel conventions: uint8 images 0..255 <-> float32 in [-1, 1] (a tanh generator's range)."""

import numpy as np
import tensorflow as tf


def _require(x, is_float):
    """Raises unless `x` (array or tensor) holds floats (is_float) or uint8 pixels."""
    dtype = x.dtype if tf.is_tensor(x) else np.dtype(x.dtype)
    ok = (dtype.is_floating if tf.is_tensor(x) else np.issubdtype(dtype, np.floating)) if is_float \
        else dtype == np.uint8
    if not ok:
        expected = "floats in [-1, 1]" if is_float else "uint8 pixels"
        raise ValueError(f"Received an invalid value for `x`, expected {expected}. Received: x.dtype={dtype.name}")


def to_float(x):
    """`float = uint8 / 127.5 - 1`: uint8 pixels to float32 in [-1, 1].

    Args:
      x: uint8 numpy array or tf.Tensor (a tensor works inside tf.function).

    Returns:
      float32, same kind (array or tensor) and shape as `x`; `to_uint8` inverts it exactly.
    """
    if not tf.is_tensor(x):
        x = np.asarray(x)
    _require(x, is_float=False)
    if tf.is_tensor(x):
        return tf.cast(x, tf.float32) / 127.5 - 1.0
    return x.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def to_uint8(x):
    """`uint8 = round(clip((float + 1) * 127.5, 0, 255))`: floats in [-1, 1] to uint8 pixels.

    Args:
      x: float numpy array or tf.Tensor; values outside [-1, 1] are clipped.

    Returns:
      uint8, same kind (array or tensor) and shape as `x`.
    """
    if not tf.is_tensor(x):
        x = np.asarray(x)
    _require(x, is_float=True)
    if tf.is_tensor(x):
        return tf.cast(tf.round(tf.clip_by_value((x + 1.0) * 127.5, 0.0, 255.0)), tf.uint8)
    return np.round(np.clip((x + 1.0) * 127.5, 0.0, 255.0)).astype(np.uint8)
