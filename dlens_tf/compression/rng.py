"""Counter-based random numbers that agree with and without XLA.

TensorFlow's stateless Philox lays out its stream differently under XLA, so one seed gives
different numbers in a jit-compiled step. Here every element's bits are a hash of
(seed, element index) computed with 32-bit integer ops, identical on both paths:
uniforms are bit-identical; normals (Box-Muller) agree to float rounding of log/cos.
The hash is `lowbias32` (Wellons), applied in two seeded rounds; it is statistically
sound, not cryptographic (neither is TensorFlow's Philox).
"""

import math

import tensorflow as tf


def _hash32(x):
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 15))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def _bits(shape, seed, stream):
    """uint32 random bits of `shape`; seed is a shape-[2] integer tensor, stream a small int."""
    seed = tf.cast(tf.math.floormod(tf.cast(tf.reshape(seed, [2]), tf.int64), 2**32), tf.uint32)
    k0 = _hash32(seed[0] + tf.constant(0x9E3779B9 * (2 * stream + 1) % 2**32, tf.uint32))
    k1 = _hash32(seed[1] ^ k0)
    idx = tf.range(tf.reduce_prod(shape), dtype=tf.int32)
    x = _hash32(tf.bitcast(idx, tf.uint32) ^ k0)
    x = _hash32(x + k1)
    return tf.reshape(x, shape)


def uniform(shape, seed, dtype=tf.float32, stream=0):
    """U[0, 1) samples on a 2^-24 grid."""
    bits = tf.bitwise.right_shift(_bits(shape, seed, stream), 8)
    return tf.cast(tf.bitcast(bits, tf.int32), dtype) * tf.constant(2.0**-24, dtype)


def normal(shape, seed, stddev=1.0, dtype=tf.float32):
    """N(0, stddev^2) samples by Box-Muller on two independent uniform streams."""
    u1 = 1.0 - uniform(shape, seed, tf.float32, stream=1)  # (0, 1]
    u2 = uniform(shape, seed, tf.float32, stream=2)
    z = tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos((2.0 * math.pi) * u2)
    return tf.cast(z, dtype) * tf.cast(stddev, dtype)
