"""TeacherEnsemble's kernels: valid-tap counts and the bfloat16 training arithmetic."""

import numpy as np
import tensorflow as tf

from dlens_tf.models.teachers import _valid_taps, ensemble_logits, im2col, parameter_shapes


def test_valid_taps_match_same_padding():
    taps = _valid_taps(8, 7).numpy().reshape(4, 4, 5, 5)
    for i in range(4):
        for j in range(4):
            rows = 2 * i - 1 + np.arange(5)  # 'SAME' pads (1, 2) rows for 8 -> 4 and (2, 2) columns for 7 -> 4
            cols = 2 * j - 2 + np.arange(5)
            expected = np.outer((rows >= 0) & (rows < 8), (cols >= 0) & (cols < 7))
            np.testing.assert_array_equal(taps[i, j], expected)


def test_im2col_matmul_equals_same_stride2_convolution():
    r = np.random.default_rng(1)
    for h, w in [(8, 7), (28, 28), (14, 14), (5, 6)]:
        x = tf.constant(r.normal(size=(2, 3, h, w, 4)).astype(np.float32))  # extra leading axis, as per teacher
        k = tf.constant(r.normal(size=(5, 5, 4, 6)).astype(np.float32))
        expected = tf.nn.conv2d(tf.reshape(x, [6, h, w, 4]), k, 2, "SAME")
        got = tf.reshape(im2col(x), [6, -1, 100]) @ tf.reshape(k, [100, 6])
        np.testing.assert_allclose(got.numpy().reshape(expected.shape), expected, rtol=1e-4, atol=1e-4)


def test_bfloat16_logits_and_gradients_stay_close_to_float32():
    shape, classes, widths, n, b = (8, 8, 1), 10, (6, 10, 16), 3, 5
    r = np.random.default_rng(0)
    params = [tf.constant(r.normal(0, 0.2, (n,) + s).astype(np.float32))
              for _, s in parameter_shapes(shape, classes, widths)]
    x = tf.constant(r.uniform(-1, 1, (n, b) + shape).astype(np.float32))
    y = tf.one_hot(r.integers(0, classes, (n, b)), classes)
    taps = _valid_taps(8, 8), _valid_taps(4, 4)

    def run(dtype):
        with tf.GradientTape() as tape:
            tape.watch(params)
            logits = ensemble_logits(params, x, y, *taps, compute_dtype=dtype)
            loss = tf.reduce_sum(tf.nn.softplus(logits))
        return logits, tape.gradient(loss, params)

    (l32, g32), (l16, g16) = run(tf.float32), run(tf.bfloat16)
    assert np.linalg.norm(l16 - l32) < 2e-2 * np.linalg.norm(l32)
    for a, c in zip(g16, g32):
        assert a.dtype == c.dtype and np.linalg.norm(a - c) < 3e-2 * np.linalg.norm(c)
    assert not np.array_equal(l16.numpy(), l32.numpy())  # bfloat16 really was used
