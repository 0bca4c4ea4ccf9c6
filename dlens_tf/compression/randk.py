"""Random-k sparsification with coordinates shared by every row (data-independent)."""

import tensorflow as tf

from dlens_tf.compression import rng
from dlens_tf.compression.topk import validate_k


def randk_indices(d, k, seed):
    """k distinct coordinates of range(d), uniformly at random, sorted; `seed` is a shape-[2] integer tensor."""
    validate_k(k, d)
    _, idx = tf.math.top_k(rng.uniform([d], seed), k=k, sorted=False)
    return tf.sort(idx)


def randk(g, k, seed):
    """values = g[:, idx] for one random set idx of k coordinates shared by all rows of `g` ([rows, d]).

    The coordinates depend only on `seed`, never on `g`, so selecting them is a contraction
    that commutes with summing rows. Returns (values [rows, k], idx [k]).
    """
    g = tf.convert_to_tensor(g)
    if g.shape.rank != 2:
        raise ValueError(f"Expected `g` of rank 2 [rows, d]. Received: shape={g.shape}")
    idx = randk_indices(g.shape[-1], k, seed)
    return tf.gather(g, idx, axis=1), idx


def scatter_columns(values, idx, d):
    """Inverse of the selection: a [rows, d] (or [d]) tensor with `values` at columns `idx`, zero elsewhere."""
    values = tf.convert_to_tensor(values)
    if values.shape.rank == 1:
        return tf.scatter_nd(idx[:, None], values, [d])
    return tf.transpose(tf.scatter_nd(idx[:, None], tf.transpose(values), [d, tf.shape(values)[0]]))
