"""Exact top-k selection and stochastic sign quantisation (DataLens Algorithm 2).

Non-finite inputs, defined once for every caller:
  * NaN counts as magnitude 0 (least important) and as value 0 when quantised, so a
    selected NaN becomes a fair coin flip of +-1;
  * +-inf counts as the largest magnitude and is quantised to its own sign.
Ties in magnitude are broken by the lower index. Every row therefore gets exactly k
selected entries whatever it holds, which is what TopAgg's sensitivity bound needs.
"""

import tensorflow as tf

from dlens_tf.compression import rng


def _validate_k(k, row_length):
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"Received an invalid value for `k`, expected a positive integer. Received: k={k!r}")
    if row_length is not None and k > row_length:
        raise ValueError(
            f"Received an invalid value for `k`, expected at most the row length {row_length}. Received: k={k}"
        )


def _validate_clip(clip):
    valid = clip is None or (isinstance(clip, (int, float)) and not isinstance(clip, bool) and clip > 0)
    if not valid:
        raise ValueError(f"Received an invalid value for `clip`, expected a positive number or None. Received: clip={clip!r}")


def _magnitude_bits(g):
    """|g| as int32 bit patterns, NaN mapped to 0: ordered like |g|, exact for subnormals under flush-to-zero."""
    bits = tf.bitwise.bitwise_and(tf.bitcast(tf.cast(g, tf.float32), tf.int32), 0x7FFFFFFF)
    return tf.where(bits > 0x7F800000, tf.zeros_like(bits), bits)


def topk_mask(g, k):
    """Boolean mask of the k largest-magnitude entries of each row of `g` (shape [rows, d]).

    Ties are broken by the lower index; NaN counts as magnitude 0. Exactly k entries of
    every row are True.
    """
    g = tf.convert_to_tensor(g)
    if g.shape.rank != 2:
        raise ValueError(f"Expected `g` of rank 2 [rows, d]. Received: shape={g.shape}")
    _validate_k(k, g.shape[-1])
    _, idx = tf.math.top_k(_magnitude_bits(g), k=k, sorted=True)
    rows = tf.shape(g)[0]
    coords = tf.stack([tf.repeat(tf.range(rows), k), tf.reshape(idx, [-1])], axis=1)
    hits = tf.scatter_nd(coords, tf.ones([rows * k], tf.int8), tf.shape(g))
    return hits > 0


def stochastic_sign(g, mask, clip, seed):
    """Unbiased {-1, +1} quantisation of the masked entries of `g`, 0 elsewhere.

    The scale is b = min(max |g_masked|, clip) per row (clip=None: no clip); each masked
    entry becomes +1 with probability (1 + g/b)/2 after clipping g to [-b, b], so the
    expectation is g/b. A row with b = 0 flips fair coins.
    `seed` is a shape-[2] integer tensor for the stateless RNG.
    """
    _validate_clip(clip)
    g = tf.convert_to_tensor(g)
    finite = tf.where(tf.math.is_nan(g), tf.zeros_like(g), g)
    mag = tf.where(mask, tf.abs(finite), tf.zeros_like(finite))
    b = tf.reduce_max(mag, axis=-1, keepdims=True)
    if clip is not None:
        b = tf.minimum(b, tf.cast(clip, g.dtype))
    safe_b = tf.where(b > 0, b, tf.ones_like(b))
    ratio = tf.where(b > 0, tf.clip_by_value(finite / safe_b, -1.0, 1.0), tf.zeros_like(finite))
    # g/b is NaN only for inf/inf; an infinite entry keeps its sign.
    ratio = tf.where(tf.math.is_inf(finite), tf.sign(finite), ratio)
    u = rng.uniform(tf.shape(g), seed, dtype=g.dtype)
    signs = tf.where(u < (1.0 + ratio) / 2.0, tf.ones_like(g), -tf.ones_like(g))
    return tf.where(mask, signs, tf.zeros_like(g))


def topk_stochastic_sign(g, k, clip=None, seed=None):
    """TopkStoSignGrad: keep the k largest-magnitude entries of each row, quantise them to +-1.

    output[r] = stochastic_sign(g[r] * topk_mask(g[r], k), clip)

    Args:
      g: float tensor [rows, d] (one gradient vector per row).
      k: number of entries kept per row, 1 <= k <= d.
      clip: optional positive per-coordinate clip c; the scale is min(max |g_topk|, c).
      seed: shape-[2] integer seed for the stateless RNG (None draws one from OS entropy).

    Returns:
      A tensor like `g` with values in {-1, 0, +1} and exactly k non-zeros per row.
    """
    _validate_clip(clip)
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    return stochastic_sign(g, topk_mask(g, k), clip, seed)
