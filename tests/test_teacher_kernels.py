"""TeacherEnsemble's kernels: valid taps, the grouped convolution's and dense layer's gradients, bfloat16 arithmetic."""

import numpy as np
import pytest
import tensorflow as tf

from dlens_tf.models.teachers import (_batched_dense, _grouped_conv, _label_term, _valid_taps, ensemble_logits,
                                      grouped_convolution_supported, im2col, parameter_shapes, _product_square_means)


def test_valid_taps_match_same_padding():
    taps = _valid_taps(8, 7).reshape(4, 4, 5, 5)
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


def test_label_term_and_its_gradients_equal_the_one_hot_sum():
    r = np.random.default_rng(6)
    n, classes, f, b = 3, 4, 5, 7
    taps = _valid_taps(8, 7)  # 16 positions of 9 kinds (top, middle, bottom rows times columns)
    k_label = tf.constant(r.normal(size=(25, n * classes * f)).astype(np.float32))
    bias = tf.constant(r.normal(size=(n, f)).astype(np.float32))
    label = r.integers(0, classes, (b, n)).astype(np.int32)
    label[:, 0] = 1  # a teacher whose records all carry one class: the others' tables get no gradient
    weights = tf.constant(r.normal(size=(b, 16, n * f)).astype(np.float32))

    def reference(k_label, bias, label, taps):
        onehot = tf.one_hot(label, classes)  # [B, n, Y]
        table = tf.einsum("pk,kiyf->piyf", taps, tf.reshape(k_label, [25, n, classes, f]))
        return tf.reshape(tf.einsum("piyf,biy->bpif", table, onehot) + bias, [b, 16, n * f])

    @tf.function
    def value_and_grads(term):
        with tf.GradientTape() as tape:
            tape.watch([k_label, bias])
            out = term(k_label, bias, tf.constant(label), taps)
            loss = tf.reduce_sum(out * weights)
        return [out] + tape.gradient(loss, [k_label, bias])

    got, want = value_and_grads(_label_term), value_and_grads(reference)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())
    dk = got[1].numpy().reshape(25, n, classes, f)
    assert np.all(dk[:, 0, [0, 2, 3]] == 0) and np.any(dk[:, 0, 1] != 0)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_batched_dense_gradients_equal_matmul_gradients(jit_compile):
    r = np.random.default_rng(2)
    x, k = (tf.constant(r.normal(size=s).astype(np.float32)) for s in [(3, 5, 7), (3, 7, 4)])
    weights = tf.constant(r.normal(size=(3, 5, 4)).astype(np.float32))

    @tf.function(jit_compile=jit_compile)
    def grads(matmul):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            loss = tf.reduce_sum(matmul(x, k) * weights)
        return tape.gradient(loss, [x, k])

    np.testing.assert_array_equal(_batched_dense(x, k), tf.matmul(x, k))
    for got, expected in zip(grads(_batched_dense), grads(tf.matmul)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not grouped_convolution_supported("float32"), reason="TF's oneDNN kernels are off in this process")
@pytest.mark.parametrize("h, w, cin, f", [(8, 6, 2, 5), (28, 28, 1, 11), (14, 14, 11, 42)])
def test_grouped_conv_gradients_equal_each_groups_convolution_gradients(h, w, cin, f):
    r = np.random.default_rng(5)
    groups, b = 3, 4
    x = tf.constant(r.normal(size=(b, h, w, groups * cin)).astype(np.float32))
    k = tf.constant(r.normal(size=(5, 5, cin, groups * f)).astype(np.float32))
    weights = tf.constant(r.normal(size=(b, h // 2, w // 2, groups * f)).astype(np.float32))

    def per_group(x, k):
        return tf.concat([tf.nn.conv2d(x[..., g * cin:(g + 1) * cin], k[..., g * f:(g + 1) * f], 2, "SAME")
                          for g in range(groups)], -1)

    @tf.function
    def value_and_grads(conv):
        with tf.GradientTape() as tape:
            tape.watch([x, k])
            out = conv(x, k)
            loss = tf.reduce_sum(out * weights)
        return [out] + tape.gradient(loss, [x, k])

    for got, want in zip(value_and_grads(_grouped_conv), value_and_grads(per_group)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_product_square_means_keep_rows_that_cancel():
    r = np.random.default_rng(3)
    sign = np.array([1, 1, 1, -1, -1, -1], np.float32)  # real and fake records pull opposite ways
    d = sign[None, :, None] * r.normal(size=(2, 1, 7)) + 1e-4 * r.normal(size=(2, 6, 7))  # nearly parallel rows
    a = r.uniform(0, 1, (2, 6, 5))
    a[:, :, 0] = 1.0  # a feature every record has: its gradient row cancels down to the 1e-4 part
    a, d = a.astype(np.float64), d.astype(np.float32).astype(np.float64)
    g = np.einsum("nbi,nbo->nio", a, d)
    assert (g[:, 0] ** 2).mean() < 1e-6 * (g[:, 1:] ** 2).mean()  # the row really cancels
    # As accurate as forming a^T d in float32: |error of g| <= B * eps32 * sum_b |a_bi d_bo|.
    dg = 6 * np.finfo(np.float32).eps * np.einsum("nbi,nbo->nio", np.abs(a), np.abs(d))
    rows, cols = _product_square_means(tf.constant(a, tf.float32), tf.constant(d, tf.float32))
    assert np.all(np.abs(rows - (g**2).mean(2)) <= ((2 * np.abs(g) + dg) * dg).mean(2))
    assert np.all(np.abs(cols - (g**2).mean(1)) <= ((2 * np.abs(g) + dg) * dg).mean(1))


@pytest.mark.parametrize("jit_compile", [False, True])
def test_product_square_means_of_a_teacher_ignore_the_other_teachers(jit_compile):
    # Teachers whose output gradients are nearly orthogonal, then teacher 0's made generic: an iterative
    # decomposition run until the whole batch converges would now take more steps for every teacher.
    r = np.random.default_rng(4)
    a = r.normal(size=(4, 6, 9)).astype(np.float32)
    d = np.zeros((4, 6, 9), np.float32)
    d[:, np.arange(6), np.arange(6)] = np.arange(1, 7)
    d += 1e-3 * r.normal(size=d.shape).astype(np.float32)
    changed = d.copy()
    changed[0] = r.normal(size=(6, 9))
    means = tf.function(_product_square_means, jit_compile=jit_compile)
    for before, after in zip(means(a, d), means(a, changed)):
        np.testing.assert_array_equal(before[1:], after[1:])
