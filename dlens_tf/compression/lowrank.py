"""Rank reduction of gradient matrices: PowerSGD factors (Vogels et al., 2019) and fixed-basis projection."""

import tensorflow as tf

from dlens_tf.compression import rng


def validate_rank(rank):
    if isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0:
        raise ValueError(f"Received an invalid value for `rank`, expected a positive integer. Received: rank={rank!r}")


def as_matrix(shape):
    """The [rows, cols] view used for a variable of `shape`: all leading dims by the last one."""
    shape = list(shape)
    cols = shape[-1]
    rows = 1
    for s in shape[:-1]:
        rows *= s
    return rows, cols


def orthonormalize(m):
    """Columns of `m` ([..., n, r]) replaced by an orthonormal basis of their span (thin QR)."""
    q, _ = tf.linalg.qr(m)
    return q


def random_basis(cols, rank, seed, dtype=tf.float32):
    """An orthonormal [cols, rank] basis drawn from `seed` alone (data-independent)."""
    validate_rank(rank)
    if rank > cols:
        raise ValueError(f"Received an invalid value for `rank`, expected at most {cols}. Received: rank={rank}")
    return orthonormalize(rng.normal([cols, rank], seed, dtype=dtype))


def project(m, basis):
    """Factor m @ basis ([..., rows, rank]). With an orthonormal basis, ||m @ basis||_F <= ||m||_F."""
    return tf.linalg.matmul(m, basis)


def power_step(m, q):
    """One PowerSGD power iteration: p = orth(m q), q' = m^T p; m is approximated by p q'^T.

    Args:
      m: [rows, cols] matrix to compress.
      q: [cols, rank] warm-start factor (the previous step's q').
    Returns:
      (p [rows, rank] orthonormal, q' [cols, rank]).
    """
    p = orthonormalize(tf.linalg.matmul(m, q))
    return p, tf.linalg.matmul(m, p, transpose_a=True)
