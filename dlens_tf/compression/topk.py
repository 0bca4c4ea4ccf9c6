"""Exact top-k selection and stochastic sign quantisation (DataLens Algorithm 2).

Non-finite inputs, defined once for every caller:
  * NaN counts as magnitude 0 (least important) and as value 0 when quantised, so a
    selected NaN becomes a fair coin flip of +-1;
  * +-inf counts as the largest magnitude and is quantised to its own sign.
Magnitudes are compared as integer bit patterns, so subnormals are ordered exactly
whatever the FPU's flush-to-zero mode. Ties in magnitude are broken by the lower index.
Every row therefore gets exactly k selected entries whatever it holds, which is what
TopAgg's sensitivity bound needs.

Selection for rows of >= 128 entries with k > d / 16: thresholds read off a strided sample's ranks, then
counting passes (several thresholds per pass, counts packed in one int64 sum) until a
threshold t has count(|g| >= t) == k exactly; rows never resolved (ties at the k-th
magnitude, a k-th magnitude below the smallest normal float, or bad luck) get the exact
top-k, gathered if they are few and for all rows otherwise. The result is always exact.
"""

import tensorflow as tf

from dlens_tf.compression import rng


def validate_k(k, row_length):
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
    """|g| as integer bit patterns with NaN -> 0: ordered like |g|, exact for subnormals under flush-to-zero."""
    if g.dtype == tf.float64:
        bits = tf.bitwise.bitwise_and(tf.bitcast(g, tf.int64), tf.constant(0x7FFFFFFFFFFFFFFF, tf.int64))
        return tf.where(bits > 0x7FF0000000000000, tf.zeros_like(bits), bits)
    bits = tf.bitwise.bitwise_and(tf.bitcast(tf.cast(g, tf.float32), tf.int32), 0x7FFFFFFF)
    return tf.where(bits > 0x7F800000, tf.zeros_like(bits), bits)


def _exact_cut(bits, k):
    """The k-th entry of each row in (magnitude desc, index asc) order: its (bits, index)."""
    values, indices = tf.math.top_k(bits, k=k, sorted=True)  # equal values: lower index first
    return values[:, k - 1], indices[:, k - 1]


# Fast selection: per-row thresholds t with count(|g| >= t) == k, found by counting passes.
_SAMPLE = 32  # entries per row whose ranks seed the first thresholds
_PASSES = 8  # counting passes before the leftover rows go to the exact path
# For k <= d / 16 TensorFlow's heap-based top_k is faster (0.04 s vs 0.6 s at [256, 26000], k=260).
_SPARSE_RATIO = 16
_TINY = 1.1754944e-38  # smallest normal float32: thresholds stay >= it, so flush-to-zero cannot change a comparison


def _counts(mag, thresholds, width):
    """count(mag >= t) per row for ascending thresholds [rows, m], packed into one int64 sum."""
    level = tf.add_n([tf.cast(mag >= thresholds[:, j : j + 1], tf.int32) for j in range(thresholds.shape[1])])
    level = tf.cast(level, tf.int64)
    packed = tf.where(level > 0, tf.bitwise.left_shift(tf.ones_like(level), width * (level - 1)), tf.zeros_like(level))
    total = tf.reduce_sum(packed, axis=1, keepdims=True)
    per_level = [tf.bitwise.bitwise_and(tf.bitwise.right_shift(total, width * j), (1 << width) - 1) for j in range(thresholds.shape[1])]
    # count(mag >= t_j) = entries at level >= j + 1.
    return tf.cumsum(tf.concat(per_level, axis=1), axis=1, reverse=True)


def _sample_thresholds(mag, k, num):
    """`num` ascending thresholds around the k-th magnitude, read off the ranks of a strided sample."""
    d = mag.shape[1]
    m = min(d, _SAMPLE)
    sample = mag[:, :: d // m][:, :m]
    sample = tf.where(sample >= _TINY, sample, tf.zeros_like(sample))  # NaN and subnormals -> 0
    pos = tf.range(m)
    # rank 0 = largest; equal values ranked by position, so ranks are a permutation of 0..m-1.
    rank = tf.add_n(
        [tf.cast((sample[:, j : j + 1] > sample) | ((sample[:, j : j + 1] == sample) & (j < pos)), tf.int32) for j in range(m)]
    )
    centre = k * m / d - 0.5
    picks = [min(m - 1, max(0, round(centre + (i - (num - 1) / 2) * 1.5))) for i in reversed(range(num))]
    th = tf.stack([tf.reduce_sum(tf.where(rank == p, sample, tf.zeros_like(sample)), axis=1) for p in picks], axis=1)
    return tf.maximum(th, _TINY)


def _fast_thresholds(mag, k):
    """Per-row float thresholds t with count(mag >= t) == k where found within _PASSES passes.

    Returns (t, found). Rows with a tie at the k-th magnitude, or where the k-th magnitude is
    below the smallest normal float, are never found.
    """
    d = mag.shape[1]
    width = d.bit_length()
    num = max(1, min(6, 63 // width))
    rows = tf.shape(mag)[0]
    lo, c_lo = tf.zeros([rows, 1]), tf.fill([rows, 1], tf.constant(d, tf.int64))  # count(mag >= lo) >= k
    hi, c_hi = tf.fill([rows, 1], float("inf")), tf.zeros([rows, 1], tf.int64)  # count(mag >= hi) < k
    top = tf.reduce_max(tf.where(mag < float("inf"), mag, tf.zeros_like(mag)), axis=1, keepdims=True)
    th = _sample_thresholds(mag, k, num)
    found, t = tf.zeros([rows, 1], tf.bool), tf.zeros([rows, 1])
    for step in range(_PASSES):
        c = _counts(mag, th, width)
        hit = c == k
        t = tf.where(found, t, tf.reduce_max(tf.where(hit, th, tf.zeros_like(th)), axis=1, keepdims=True))
        found = found | tf.reduce_any(hit, axis=1, keepdims=True)
        if step == _PASSES - 1:
            break
        above = c >= k
        new_lo = tf.reduce_max(tf.where(above, th, tf.fill(tf.shape(th), -1.0)), axis=1, keepdims=True)
        new_c_lo = tf.reduce_min(tf.where(above, c, tf.fill(tf.shape(c), tf.constant(d, tf.int64))), axis=1, keepdims=True)
        lo, c_lo = tf.where(new_lo > lo, new_lo, lo), tf.where(new_lo > lo, new_c_lo, c_lo)
        new_hi = tf.reduce_min(tf.where(above, tf.fill(tf.shape(th), float("inf")), th), axis=1, keepdims=True)
        new_c_hi = tf.reduce_max(tf.where(above, tf.zeros_like(c), c), axis=1, keepdims=True)
        hi, c_hi = tf.where(new_hi < hi, new_hi, hi), tf.where(new_hi < hi, new_c_hi, c_hi)
        # Interpolate linearly inside [lo, hi): the k-th entry is the (k - c_hi)-th of the c_lo - c_hi there.
        upper = tf.minimum(hi, top)
        inside = tf.cast(c_lo - c_hi, tf.float32)
        frac = (tf.cast(k - c_hi, tf.float32) - 0.5) / inside
        spread = tf.maximum(1.0, tf.sqrt(inside)) / inside
        offsets = tf.constant([i - (num - 1) / 2 for i in range(num)], tf.float32)
        fracs = tf.clip_by_value(frac + offsets * spread, 0.0, 1.0)
        th = tf.maximum(upper - fracs * (upper - lo), _TINY)
        th = tf.sort(th, axis=1)
    return t[:, 0], found[:, 0]


def topk_mask(g, k):
    """Boolean mask of the k largest-magnitude entries of each row of `g` (shape [rows, d]).

    Ties are broken by the lower index; NaN counts as magnitude 0. Exactly k entries of
    every row are True.
    """
    g = tf.convert_to_tensor(g)
    if g.shape.rank != 2:
        raise ValueError(f"Expected `g` of rank 2 [rows, d]. Received: shape={g.shape}")
    d = g.shape[1]
    validate_k(k, d)
    if k == d:
        return tf.ones_like(g, tf.bool)
    bits = _magnitude_bits(g)
    if d is None or g.dtype == tf.float64 or d < 4 * _SAMPLE or k * _SPARSE_RATIO <= d:
        cut_bits, cut_index = _exact_cut(bits, k)
    else:
        cut_bits, cut_index = _thresholds_with_fallback(tf.abs(tf.cast(g, tf.float32)), bits, k)
    index = tf.range(tf.shape(g)[1])
    return (bits > cut_bits[:, None]) | ((bits == cut_bits[:, None]) & (index <= cut_index[:, None]))


def _thresholds_with_fallback(mag, bits, k):
    """(cut bits, cut index) per row: fast thresholds, the exact path for rows they miss."""
    t, found = _fast_thresholds(mag, k)
    # a >= t  <=>  bits > bits(t) - 1 for a normal t; the index cut then never applies.
    cut_bits = tf.bitcast(t, tf.int32) - 1
    cut_index = tf.fill(tf.shape(cut_bits), -1)
    rows = tf.shape(mag)[0]
    spare = tf.maximum(1, rows // 16)
    missed = tf.reduce_sum(tf.cast(~found, tf.int32))

    def patch():
        _, which = tf.math.top_k(tf.cast(~found, tf.int32), k=tf.minimum(spare, rows))
        exact_bits, exact_index = _exact_cut(tf.gather(bits, which), k)
        return (
            tf.tensor_scatter_nd_update(cut_bits, which[:, None], exact_bits),
            tf.tensor_scatter_nd_update(cut_index, which[:, None], exact_index),
        )

    return tf.cond(missed <= spare, patch, lambda: _exact_cut(bits, k))


def stochastic_sign(g, mask, clip, seed):
    """Unbiased {-1, +1} quantisation of the masked entries of `g`, 0 elsewhere.

    The scale is b = min(max |g_masked|, clip) per row (clip=None: no clip); each masked
    entry becomes +1 with probability (1 + g/b)/2 after clipping g to [-b, b], so the
    expectation is g/b. A row with b = 0 flips fair coins.
    `seed` is a shape-[2] integer tensor for the stateless RNG.
    """
    _validate_clip(clip)
    g = tf.convert_to_tensor(g)
    return _quantise(g, mask, tf.reduce_max(tf.where(mask, _finite_magnitude(g), tf.zeros_like(g)), axis=-1), clip, seed)


def _finite_magnitude(g):
    """|g| with NaN -> 0 (inf stays inf)."""
    return tf.abs(tf.where(tf.math.is_nan(g), tf.zeros_like(g), g))


def _quantise(g, mask, top, clip, seed):
    """stochastic_sign given top = max |g_masked| per row."""
    b = top[:, None]
    if clip is not None:
        b = tf.minimum(b, tf.cast(clip, g.dtype))
    finite = tf.where(tf.math.is_nan(g), tf.zeros_like(g), g)
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
    g = tf.convert_to_tensor(g)
    # The largest magnitude is always kept, so the scale needs no mask.
    return _quantise(g, topk_mask(g, k), tf.reduce_max(_finite_magnitude(g), axis=-1), clip, seed)
