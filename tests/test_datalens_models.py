"""TeacherEnsemble, Generator and DataLens: isolation, reference equivalence, training, save/resume, errors."""

import ctypes
import errno
import glob
import math
import mmap
import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from dlens_tf.callbacks import BudgetExhaustedError, PrivacyBudget
from dlens_tf.data import load
from dlens_tf.models import (DataLens, Generator, TeacherEnsemble, build_discriminator, check_room_for_checkpoint,
                             checkpoint_bytes, restore_checkpoint, save_checkpoint)
from dlens_tf.models.teachers import grouped_convolution_supported, translate
from dlens_tf.privacy import GeometricNoiseSchedule, PrivacyAccountant, gaussian_epsilon
from dlens_tf.privacy.topagg import TopAgg, compress, topagg_noise_multiplier

SHAPE = (8, 8, 1)
WIDTHS = (6, 10, 16)


def _ensemble(n=5, **kwargs):
    kwargs = {"widths": WIDTHS, "chunk_size": 2, "seed": 3, **kwargs}
    return TeacherEnsemble(n, SHAPE, 10, **kwargs)


CONVOLUTIONS = [
    "im2col",
    pytest.param("grouped", marks=pytest.mark.skipif(not grouped_convolution_supported("float32"),
                                                     reason="TF's oneDNN kernels are off in this process")),
]


def _batch(seed, n=5, m=6):
    r = np.random.default_rng(seed)
    real_x = r.uniform(-1, 1, (n, m) + SHAPE).astype(np.float32)
    real_y = r.integers(0, 10, (n, m))
    fake_x = r.uniform(-1, 1, (m,) + SHAPE).astype(np.float32)
    fake_y = r.integers(0, 10, (m,))
    return real_x, real_y, fake_x, fake_y


# Both kernels with the presets' bfloat16 storage; float32 storage with batch norm and translation (the
# batch-norm kernels of both layouts are checked teacher by teacher against Keras in
# test_ensemble_matches_per_teacher_keras_model).
@pytest.mark.parametrize("options, convolution", [
    (dict(weight_dtype="bfloat16"), "im2col"),
    pytest.param(dict(weight_dtype="bfloat16"), "grouped", marks=CONVOLUTIONS[1].marks),
    (dict(weight_dtype="float32", batch_norm=True), "im2col"), (dict(weight_dtype="float32", translation=2), "im2col")])
def test_teacher_isolation(options, convolution):
    real_x, real_y, fake_x, fake_y = _batch(0)
    changed = real_x.copy()
    changed[2, 4] = -changed[2, 4]  # one record of teacher 2's partition
    a, b = (_ensemble(convolution=convolution, **options) for _ in range(2))
    assert a.convolution_in_use == convolution
    for _ in range(2):
        a.teacher_step(real_x, real_y, fake_x, fake_y)
        b.teacher_step(changed, real_y, fake_x, fake_y)
    for i in range(5):
        same = all(np.array_equal(u, v) for u, v in zip(a.teacher_weights(i), b.teacher_weights(i)))
        assert same == (i != 2), f"teacher {i}"
    ga, gb = a.image_gradients(fake_x, fake_y).numpy(), b.image_gradients(fake_x, fake_y).numpy()
    assert np.array_equal(np.delete(ga, 2, 0), np.delete(gb, 2, 0))
    assert not np.array_equal(ga[2], gb[2])


def test_shared_init_starts_teachers_alike_and_keeps_them_isolated():
    real_x, real_y, fake_x, fake_y = _batch(0)
    real_x[3], real_y[3] = real_x[0], real_y[0]  # teachers 0 and 3 hold the same records
    changed = real_x.copy()
    changed[2, 4] = -changed[2, 4]
    a, b = (_ensemble(shared_init=True, weight_dtype="float32") for _ in range(2))
    start = [a.teacher_weights(i) for i in range(5)]
    assert all(np.array_equal(u, v) for i in range(1, 5) for u, v in zip(start[0], start[i]))
    assert not np.array_equal(_ensemble().teacher_weights(0)[0], _ensemble().teacher_weights(1)[0])
    for _ in range(2):
        a.teacher_step(real_x, real_y, fake_x, fake_y)
        b.teacher_step(changed, real_y, fake_x, fake_y)
    after = [a.teacher_weights(i) for i in range(5)]
    for u, v, w in zip(after[0], after[3], start[0]):  # alike where their data are alike (up to float rounding
        np.testing.assert_allclose(u, v, atol=1e-3 * np.abs(u - w).max())  # across shards), unlike elsewhere
    assert not np.array_equal(after[0][0], after[1][0])
    for i in range(5):
        same = all(np.array_equal(u, v) for u, v in zip(after[i], b.teacher_weights(i)))
        assert same == (i != 2), f"teacher {i}"
    assert TeacherEnsemble.from_config(a.get_config()).shared_init is True
    with pytest.raises(ValueError, match="`shared_init`"):
        _ensemble(shared_init="yes")


def test_per_teacher_fakes_train_each_teacher_on_its_own_row():
    real_x, real_y, fake_x, fake_y = _batch(5)
    own_x, own_y = np.repeat(fake_x[None], 5, 0), np.repeat(fake_y[None], 5, 0)
    shared, copies, changed = (_ensemble(weight_dtype="float32") for _ in range(3))
    shared.teacher_step(real_x, real_y, fake_x, fake_y)
    copies.teacher_step(real_x, real_y, own_x, own_y)  # every row the shared batch: the same update
    own_x[3, 1] = -own_x[3, 1]  # teacher 3's own fakes differ
    changed.teacher_step(real_x, real_y, own_x, own_y)
    for i in range(5):
        for u, v, w in zip(shared.teacher_weights(i), copies.teacher_weights(i), changed.teacher_weights(i)):
            np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)
            if i != 3:
                np.testing.assert_array_equal(v, w)
    assert not all(np.array_equal(u, v) for u, v in zip(copies.teacher_weights(3), changed.teacher_weights(3)))
    with pytest.raises(ValueError, match="one row per teacher"):
        shared.teacher_step(real_x, real_y, own_x[:4], own_y[:4])


@pytest.mark.parametrize("convolution", CONVOLUTIONS)
@pytest.mark.parametrize("batch_norm", [False, True])
def test_ensemble_matches_per_teacher_keras_model(convolution, batch_norm):
    ens = _ensemble(weight_dtype="float32", convolution=convolution, batch_norm=batch_norm)
    real_x, real_y, fake_x, fake_y = _batch(1)
    ens.teacher_step(real_x, real_y, fake_x, fake_y)  # weights away from initialisation
    logits = ens((fake_x, fake_y)).numpy()
    own_logits = ens((real_x, real_y)).numpy()
    grads = ens.image_gradients(fake_x, fake_y).numpy()
    reference = build_discriminator(SHAPE, 10, WIDTHS, batch_norm=batch_norm)
    y_fake = tf.one_hot(fake_y, 10)
    for i in range(5):
        reference.set_weights(ens.teacher_weights(i))
        np.testing.assert_allclose(reference([fake_x, y_fake])[:, 0], logits[i], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(reference([real_x[i], tf.one_hot(real_y[i], 10)])[:, 0], own_logits[i],
                                   rtol=1e-4, atol=1e-5)
        x = tf.constant(fake_x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_mean(tf.nn.softplus(-reference([x, y_fake])[:, 0]))
        np.testing.assert_allclose(-tape.gradient(loss, x), grads[i], rtol=1e-3, atol=1e-7)


# float32 image gradients (the presets') match to float32 rounding; bfloat16 ones to bfloat16's.
@pytest.mark.parametrize("image_gradient_dtype, tolerance", [("float32", 1e-3), ("bfloat16", 0.05)])
def test_image_gradients_with_bfloat16_storage_match_the_float32_reference(image_gradient_dtype, tolerance):
    """With the presets' bfloat16 storage (bfloat16 training arithmetic where oneDNN has it), the released
    image gradients match the float32 Keras model holding the same stored weights."""
    ens = _ensemble(weight_dtype="bfloat16", image_gradient_dtype=image_gradient_dtype)
    bfloat16_used = image_gradient_dtype == "bfloat16" and ens.convolution_in_use == "grouped" and (
        grouped_convolution_supported("bfloat16"))
    real_x, real_y, fake_x, fake_y = _batch(1)
    ens.teacher_step(real_x, real_y, fake_x, fake_y)
    grads = ens.image_gradients(fake_x, fake_y).numpy()
    reference = build_discriminator(SHAPE, 10, WIDTHS)
    for i in range(5):
        reference.set_weights(ens.teacher_weights(i))
        x = tf.constant(fake_x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_mean(tf.nn.softplus(-reference([x, tf.one_hot(fake_y, 10)])[:, 0]))
        want = -tape.gradient(loss, x).numpy()
        error = np.linalg.norm(grads[i] - want) / np.linalg.norm(want)
        assert error <= tolerance, f"teacher {i}"
        assert (error > 1e-3) == bfloat16_used, f"teacher {i}: relative error {error}"  # bfloat16 really was used


def _factored_adam(p, g, state, t, lr=1e-3, b1=0.5, b2=0.999, eps=1e-8):
    """The documented teacher update in numpy: Adam whose second moment is factored for kernels."""
    state["m"] = b1 * state.get("m", 0.0) + (1 - b1) * g
    g2 = g**2 + 1e-30
    if g.ndim == 2 and min(g.shape) > 1:
        state["vr"] = b2 * state.get("vr", 0.0) + (1 - b2) * g2.mean(1)
        state["vc"] = b2 * state.get("vc", 0.0) + (1 - b2) * g2.mean(0)
        v = np.outer(state["vr"], state["vc"]) / state["vr"].mean()
    else:
        state["v"] = v = b2 * state.get("v", 0.0) + (1 - b2) * g2
    lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
    return p - lr_t * state["m"] / (np.sqrt(v) + eps)


# beta_1 = 0 stores no first moment: the step then takes the gradient itself.
@pytest.mark.parametrize("convolution, beta_1", [("im2col", 0.5), pytest.param("grouped", 0.5, marks=CONVOLUTIONS[1].marks),
                                                 pytest.param("grouped", 0.0, marks=CONVOLUTIONS[1].marks)])
def test_teacher_steps_are_factored_adam_steps_on_the_keras_gradient(convolution, beta_1):
    ens = _ensemble(n=2, weight_dtype="float32", convolution=convolution, beta_1=beta_1)
    assert len(ens.shards[0]["m"]) == (0 if beta_1 == 0 else len(ens.shards[0]["params"]))
    reference = build_discriminator(SHAPE, 10, WIDTHS)
    states = [[{} for _ in reference.get_weights()] for _ in range(2)]
    for t in (1, 2):  # the second step also checks the moments carried over
        real_x, real_y, fake_x, fake_y = _batch(t, n=2)
        before, expected = [], []
        for i in range(2):
            weights = ens.teacher_weights(i)
            reference.set_weights(weights)
            with tf.GradientTape() as tape:
                loss = (tf.reduce_mean(tf.nn.softplus(-reference([real_x[i], tf.one_hot(real_y[i], 10)])))
                        + tf.reduce_mean(tf.nn.softplus(reference([fake_x, tf.one_hot(fake_y, 10)]))))
            grads = tape.gradient(loss, reference.trainable_weights)
            flat = lambda a: a.reshape(-1, a.shape[-1]) if a.ndim == 4 else a  # noqa: E731  conv kernels as matrices
            before.append(weights)
            expected.append([_factored_adam(flat(p), flat(g.numpy()), state, t, b1=beta_1).reshape(p.shape)
                             for p, g, state in zip(weights, grads, states[i])])
        ens.teacher_step(real_x, real_y, fake_x, fake_y)
        for i in range(2):
            for got, want, old in zip(ens.teacher_weights(i), expected[i], before[i]):
                np.testing.assert_allclose(got - old, want - old, rtol=1e-3, atol=1e-7)


def test_image_gradient_shape_and_sign():
    ens = _ensemble(n=4)
    _, _, fake_x, fake_y = _batch(2, n=4, m=7)
    g = ens.image_gradients(fake_x, fake_y)
    assert g.shape == (4, 7) + SHAPE
    before = ens((fake_x, fake_y)).numpy()
    step = 1e-2 / np.abs(g.numpy()).max(axis=(2, 3, 4), keepdims=True)
    moved = (fake_x[None] + step * g.numpy()).astype(np.float32)
    after = ens((moved, np.broadcast_to(fake_y, (4, 7)))).numpy()
    assert np.all(after > before)


def test_teacher_steps_learn_to_separate_real_from_fake():
    ens = _ensemble(n=3)
    real_x, real_y, _, fake_y = _batch(3, n=3)
    real_x = np.abs(real_x)  # "real" records are bright, "fake" ones dark
    fake_x = -np.abs(real_x[0])
    first = float(ens.teacher_step(real_x, real_y, fake_x, fake_y))
    for _ in range(30):
        last = float(ens.teacher_step(real_x, real_y, fake_x, fake_y))
    assert last < 0.5 * first
    assert int(ens.teacher_weights(0)[0].size) == 25 * 11 * WIDTHS[0]
    assert ens.iterations.numpy() == 31


def _datalens(num_teachers=10, seed=0, weight_dtype="bfloat16", image_gradient_dtype="float32", **kwargs):
    generator = Generator(z_dim=8, num_classes=10, image_shape=SHAPE, dense_units=32, filters=8)
    teachers = TeacherEnsemble(num_teachers, SHAPE, 10, widths=WIDTHS, chunk_size=5, seed=seed,
                               weight_dtype=weight_dtype, image_gradient_dtype=image_gradient_dtype)
    kwargs = {"batch_size": 12, "pretrain_steps": 2, "seed": seed, **kwargs}
    model = DataLens(generator, teachers, TopAgg(k=8, sigma=2.0, beta=0.2, seed=seed), **kwargs)
    model.compile()
    return model


@pytest.fixture(scope="module")
def digits():
    (x, y), _ = load("digits")
    return np.array(x[:400]), np.array(y[:400])


def test_datalens_fit_logs_and_privacy_steps(digits):
    model = _datalens()
    model.set_data(*digits, seed=0)
    history = model.fit(steps_per_epoch=3, epochs=1, verbose=0)
    assert model.privacy_steps.numpy() == 3
    assert model.pretrained_steps.numpy() == 2
    assert {"d_loss", "g_loss", "votes_kept"} <= set(history.history)
    votes = history.history["votes_kept"][-1]
    assert 0 < votes <= 64
    assert np.isfinite(history.history["d_loss"][-1])
    # 2 pre-training + 3 x d_steps teacher updates
    assert model.teachers.iterations.numpy() == 2 + 3 * 2
    event = model.dp_event_per_step()
    assert event.count == 12 and event.event.noise_multiplier == topagg_noise_multiplier(8, 2.0)
    x, y = model.generate(25, seed=0)
    assert x.shape == (25,) + SHAPE and x.dtype == np.uint8
    assert np.bincount(y, minlength=10).min() == 2


def test_label_matched_fakes_carry_each_teacher_real_labels(digits):
    model = _datalens(label_matched_fakes=True)
    model.set_data(*digits, seed=0)
    pool = tf.random.uniform([10, 12] + list(SHAPE), seed=2)
    x, y, fx, fy = model._real_batches(tf.constant([1, 2], tf.int64), 2, pool)(3, 8)
    assert fx.shape == (2, 5, 12) + SHAPE
    np.testing.assert_array_equal(fy, y)
    y = y.numpy()
    for s, i, j in [(0, 0, 0), (1, 4, 11), (0, 2, 5)]:
        np.testing.assert_array_equal(fx[s, i, j], pool[y[s, i, j], j])
    history = model.fit(steps_per_epoch=2, epochs=1, verbose=0)
    assert model.privacy_steps.numpy() == 2 and np.isfinite(history.history["d_loss"][-1])
    assert DataLens.from_config(model.get_config()).label_matched_fakes
    with pytest.raises(ValueError, match="label_matched_fakes"):
        _datalens(label_matched_fakes="yes")


def test_shuffled_real_batches_cycle_through_each_partition():
    """"shuffle": every update holds each record of its teacher's partition floor(m / S) or ceil(m / S) times."""
    sizes = [12, 5, 20] + [12] * 7
    # record r of teacher i is the constant image 25 * i + r (no two teachers share a value)
    x_parts = [np.broadcast_to((25 * i + np.arange(s, dtype=np.uint8))[:, None, None, None], (s,) + SHAPE)
               for i, s in enumerate(sizes)]
    y_parts = [np.arange(s) % 10 for s in sizes]
    model = _datalens(real_sampling="shuffle")
    model.set_partitions(x_parts, y_parts)
    x, y = model._real_batches(tf.constant([1, 2], tf.int64), 2)(0, 3)
    record = np.rint((x.numpy()[..., 0, 0, 0] + 1.0) * 127.5).astype(int)  # [steps, 3 teachers, m]
    for t, size in enumerate(sizes[:3]):
        for s in range(2):
            counts = np.bincount(record[s, t] - 25 * t, minlength=size)
            assert counts.sum() == 12 and counts.min() >= 12 // size and counts.max() <= -(-12 // size)
            np.testing.assert_array_equal(y.numpy()[s, t], (record[s, t] - 25 * t) % 10)
    assert not np.array_equal(record[0, 0], record[1, 0])  # a fresh order per update
    assert DataLens.from_config(model.get_config()).real_sampling == "shuffle"
    with pytest.raises(ValueError, match="real_sampling"):
        _datalens(real_sampling="without")


def test_vote_pool_votes_on_pixel_blocks_within_the_same_bound(digits):
    model = _datalens(vote_pool=2)  # 8 x 8 images -> TopAgg votes on 4 x 4 blocks, k = 8
    assert model.vote_shape == (4, 4, 1)
    g = np.random.default_rng(0).standard_normal((10, 12) + SHAPE).astype(np.float32)
    g[0, 0] = np.nan
    g[1, 0, :2, :2, 0] = [[np.inf, -np.inf], [0, 0]]
    g[2] = 0.0  # all ties
    g[3, 0, 4:6, 2:4] = np.inf
    pooled = model._pool(tf.constant(g)).numpy()
    np.testing.assert_allclose(pooled[5, 3, 1, 2, 0], g[5, 3, 2:4, 4:6, 0].mean(), rtol=1e-6)
    # Whatever a teacher's gradient holds, it sends exactly k entries of +-1 per record.
    signs = compress(tf.reshape(pooled, [10, 12, 16]), 8, 1e-5, tf.constant([1, 2], tf.int64)).numpy()
    assert set(np.unique(signs)) <= {-1.0, 1.0, 0.0}
    np.testing.assert_array_equal(np.count_nonzero(signs, axis=2), np.full((10, 12), 8))
    votes = tf.constant(np.random.default_rng(1).choice([-1.0, 0.0, 1.0], (12, 4, 4, 1)), tf.float32)
    np.testing.assert_array_equal(model._unpool(votes).numpy(), np.repeat(np.repeat(votes.numpy(), 2, 1), 2, 2))
    # Training: votes are counted per block, and a step costs what it costs without pooling.
    model.set_data(*digits, seed=0)
    history = model.fit(steps_per_epoch=2, epochs=1, verbose=0)
    assert 0 < history.history["votes_kept"][-1] <= 16 and np.isfinite(history.history["g_loss"][-1])
    event = model.dp_event_per_step()
    assert event.count == 12 and event.event.noise_multiplier == topagg_noise_multiplier(8, 2.0)
    assert DataLens.from_config(model.get_config()).vote_shape == (4, 4, 1)
    for bad, match in ((3, "vote_pool.*divisor"), (0, "vote_pool.*positive"), (4, "k at most the 4 coordinates")):
        with pytest.raises(ValueError, match=match):
            _datalens(vote_pool=bad)


def test_vote_output_noisy_sum_is_the_noisy_vote_sum_before_the_threshold(digits):
    """The generator follows V / sigma: the same noise draw as the thresholded votes, nothing else."""
    g = tf.constant(np.random.default_rng(2).standard_normal((10, 12) + SHAPE).astype(np.float32))
    votes, direction = _datalens()._vote(g)
    model = _datalens(vote_output="noisy_sum")  # same seeds: the same compression and noise
    votes_n, direction_n = model._vote(g)
    np.testing.assert_array_equal(direction.numpy(), votes.numpy())  # the paper's gbar: the votes
    np.testing.assert_array_equal(votes_n.numpy(), votes.numpy())
    noisy = direction_n.numpy() * 2.0  # sigma = 2
    kept = votes.numpy() != 0
    assert kept.any() and (~kept).any()
    np.testing.assert_array_equal(np.sign(noisy[kept]), votes.numpy()[kept])
    assert np.all(np.abs(noisy[kept]) > 0.2 * 10) and np.all(np.abs(noisy[~kept]) <= 0.2 * 10 + 1e-6)
    # The sum of 10 teachers' +-1 votes plus N(0, 4): its coordinates are not all integers.
    assert np.mean(np.abs(noisy - np.round(noisy)) > 1e-3) > 0.9
    model.set_data(*digits, seed=0)
    history = model.fit(steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["g_loss"][-1])
    event = model.dp_event_per_step()  # post-processing of the same mechanism: the same cost
    assert event.count == 12 and event.event.noise_multiplier == topagg_noise_multiplier(8, 2.0)
    assert DataLens.from_config(model.get_config()).vote_output == "noisy_sum"
    with pytest.raises(ValueError, match="vote_output"):
        _datalens(vote_output="sum")


def _reloaded(model, digits, tmp_path):
    """A new DataLens from `model`'s config and saved weights, holding the digits partitions."""
    path = str(tmp_path / "ckpt")
    model.save_weights(path)
    resumed = DataLens.from_config(model.get_config())
    resumed.compile()
    resumed.set_data(*digits, seed=0)
    resumed.load_weights(path)
    return resumed


def test_noise_schedule_sets_each_steps_noise_and_the_budget_pays_exactly_that(digits, tmp_path):
    schedule = GeometricNoiseSchedule(40.0, 20.0, 4)
    model = _datalens(noise_schedule=schedule)
    g = tf.constant(np.random.default_rng(2).standard_normal((10, 12) + SHAPE).astype(np.float32))
    aggregate, sigmas = model._aggregate, []
    model._aggregate = lambda grads, sigma: (sigmas.append(float(sigma)), aggregate(grads, sigma))[1]
    for step in (0, 1, 3, 7):  # the step index is the privacy step counter
        model.privacy_steps.assign(step)
        model._vote(g)
    assert sigmas == list(schedule.values(8)[[0, 1, 3, 7]])
    model._aggregate = aggregate
    model.privacy_steps.assign(0)
    with pytest.raises(ValueError, match="dp_event_of_steps"):
        model.dp_event_per_step()

    def epsilon(steps):
        return PrivacyAccountant("pld").compose(model.dp_event_of_steps(steps)).get_epsilon(1e-5)

    target = (epsilon(3) + epsilon(4)) / 2  # three steps fit, four do not
    model.set_data(*digits, seed=0)
    history = model.fit(steps_per_epoch=1, epochs=10, verbose=0, callbacks=[PrivacyBudget(target, 1e-5, "pld")])
    assert model.privacy_steps.numpy() == 3
    precision = 12 * sum(topagg_noise_multiplier(8, s) ** -2 for s in schedule.values(3))  # 12 records a step
    assert history.history["epsilon"][-1] == pytest.approx(gaussian_epsilon(math.sqrt(precision), 1e-5), rel=1e-9)

    resumed = _reloaded(model, digits, tmp_path)
    assert resumed.noise_schedule == schedule and resumed.privacy_steps.numpy() == 3
    with pytest.raises(BudgetExhaustedError):  # the schedule's 4th step would pass the budget
        resumed.fit(steps_per_epoch=1, epochs=1, verbose=0, callbacks=[PrivacyBudget(target, 1e-5, "pld")])
    assert resumed.privacy_steps.numpy() == 3
    with pytest.raises(ValueError, match="noise_schedule"):
        _datalens(noise_schedule=5.0)


def test_generator_keras_round_trip(tmp_path):
    generator = Generator(z_dim=8, num_classes=10, image_shape=SHAPE, dense_units=32, filters=8)
    z, y = tf.random.uniform([5, 8], -1, 1, seed=1), tf.one_hot([0, 3, 5, 7, 9], 10)
    expected = generator([z, y], training=False).numpy()
    path = str(tmp_path / "generator.keras")
    generator.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Generator) and loaded.get_config() == generator.get_config()
    np.testing.assert_array_equal(loaded([z, y], training=False).numpy(), expected)
    assert expected.min() >= -1 and expected.max() <= 1


def test_datalens_config_round_trip():
    model = _datalens(gamma=2e-3, d_steps=1, image_gradient_dtype="bfloat16")
    config = model.get_config()
    clone = DataLens.from_config(config)
    assert clone.get_config() == config
    assert clone.teachers.num_teachers == 10 and clone.topagg.k == 8 and clone.gamma == 2e-3
    assert clone.teachers.image_gradient_dtype == "bfloat16"


def test_resume_continues_privacy_steps_and_state(digits, tmp_path):
    first = _datalens(seed=5)
    first.set_data(*digits, seed=0)
    first.fit(steps_per_epoch=2, epochs=1, verbose=0)
    resumed = _reloaded(first, digits, tmp_path)
    assert resumed.privacy_steps.numpy() == 2 and resumed.pretrained_steps.numpy() == 2
    for i in (0, 9):
        for u, v in zip(first.teachers.teacher_weights(i), resumed.teachers.teacher_weights(i)):
            np.testing.assert_array_equal(u, v)

    first.fit(steps_per_epoch=1, epochs=1, verbose=0)  # the uninterrupted run's third step
    resumed.fit(steps_per_epoch=1, epochs=1, verbose=0)
    assert resumed.privacy_steps.numpy() == 3
    assert resumed.teachers.iterations.numpy() == first.teachers.iterations.numpy() == 2 + 3 * 2
    for i in (0, 9):
        for u, v in zip(first.teachers.teacher_weights(i), resumed.teachers.teacher_weights(i)):
            np.testing.assert_allclose(u, v, rtol=1e-2, atol=1e-4)
    for u, v in zip(first.generator.get_weights(), resumed.generator.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-6)


_LAZY_SLOTS = "model/optimizer/_variables/"


def _checkpoint_values(path):
    """{key: numpy value} of every variable in a checkpoint but its save counter."""
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if k not in ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")}


def test_restore_checkpoint_equals_the_saved_model_and_its_next_step(digits, tmp_path):
    """Every checkpointed variable (generator, its optimizer, teachers and their moments, counters, RNG
    states) comes back bit-identical, the generator optimizer's lazily built slots included."""
    first = _datalens(seed=5)
    first.set_data(*digits, seed=0)
    first.fit(steps_per_epoch=2, epochs=1, verbose=0)
    path = tf.train.Checkpoint(model=first).save(str(tmp_path / "saved"))
    saved = _checkpoint_values(path)

    resumed = DataLens.from_config(first.get_config())
    resumed.compile()
    resumed.set_data(*digits, seed=0)
    checkpoint = tf.train.Checkpoint(model=resumed)
    before = _checkpoint_values(tf.train.Checkpoint(model=resumed).save(str(tmp_path / "before")))
    changed = {k for k in before if not np.array_equal(before[k], saved[k])}
    for key in ("privacy_steps", "pretrained_steps", "_rng/_state_var", "topagg/_rng/_state_var",
                "teachers/iterations", "teachers/shards/1/params/2", "teachers/shards/1/m/2",
                "teachers/shards/1/v/2/0", "generator/dense1/kernel", "generator/bn1/moving_mean",
                "optimizer/_iterations"):
        assert f"model/{key}/.ATTRIBUTES/VARIABLE_VALUE" in changed, key  # the restore has work to do

    restore_checkpoint(checkpoint, path)
    assert checkpoint.save_counter.numpy() == 1
    after = _checkpoint_values(tf.train.Checkpoint(model=resumed).save(str(tmp_path / "after")))
    lazy = set(saved) - set(after)  # the optimizer builds its slots at its first step
    assert lazy and all(k.startswith(_LAZY_SLOTS) for k in lazy) and set(after) <= set(saved)
    for key, value in after.items():
        np.testing.assert_array_equal(value, saved[key], err_msg=key)

    first.fit(steps_per_epoch=1, epochs=1, verbose=0)  # the uninterrupted run's third step
    resumed.fit(steps_per_epoch=1, epochs=1, verbose=0)
    a = _checkpoint_values(tf.train.Checkpoint(model=first).save(str(tmp_path / "first3")))
    b = _checkpoint_values(tf.train.Checkpoint(model=resumed).save(str(tmp_path / "resumed3")))
    assert set(a) == set(b) == set(saved) and b["model/privacy_steps/.ATTRIBUTES/VARIABLE_VALUE"] == 3
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)


def _cached_fraction(path):
    """The share of a file's pages that are in the OS page cache (mincore of a mapping of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = os.path.getsize(path)
    pages = -(-size // mmap.PAGESIZE)
    resident = (ctypes.c_ubyte * pages)()
    fd = os.open(path, os.O_RDONLY)
    try:
        address = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert address not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            assert libc.mincore(address, size, resident) == 0, os.strerror(ctypes.get_errno())
        finally:
            libc.munmap(address, size)
    finally:
        os.close(fd)
    return sum(r & 1 for r in resident) / pages


def _filesystem(path):
    """The type of the filesystem holding `path` (Linux's /proc/self/mounts; the longest matching mount point)."""
    with open("/proc/self/mounts") as f:
        mounts = [line.split()[1:3] for line in f]
    path = os.path.realpath(path)
    return max(((point, kind) for point, kind in mounts if path == point or path.startswith(point.rstrip("/") + "/")),
               key=lambda m: len(m[0]))[1]


@pytest.mark.skipif(not (hasattr(os, "posix_fadvise") and os.path.exists("/proc/self/mounts")),
                    reason="Linux only: elsewhere save_checkpoint is a plain save")
def test_save_checkpoint_writes_through_the_page_cache_and_restore_leaves_it(tmp_path):
    """The manager's checkpoint, on disk and not in the page cache, where a plain save leaves it cached."""
    if _filesystem(tmp_path) == "tmpfs":
        pytest.skip("a tmpfs file lives in the page cache")
    values = tf.random.stateless_uniform([4, 1 << 20], [0, 1])  # 16 MiB
    variable = tf.Variable(values)
    checkpoint = tf.train.Checkpoint(v=variable)
    data = lambda path: glob.glob(path + ".data-*")[0]  # noqa: E731
    plain = tf.train.CheckpointManager(checkpoint, str(tmp_path / "plain"), max_to_keep=1).save()
    assert _cached_fraction(data(plain)) > 0.9  # the measurement sees TF's copy in the cache
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path / "through"), max_to_keep=1)
    for number in (3, 4):
        path = save_checkpoint(manager, checkpoint_number=number)
        assert path == manager.latest_checkpoint == str(tmp_path / "through" / f"ckpt-{number}")
        assert _cached_fraction(data(path)) < 0.1
    assert manager.checkpoints == [path]  # max_to_keep=1 deleted ckpt-3
    variable.assign(tf.zeros_like(values))
    restore_checkpoint(checkpoint, path)
    np.testing.assert_array_equal(variable.numpy(), values.numpy())
    assert _cached_fraction(data(path)) < 0.1
    with pytest.raises(ValueError, match="expected a tf.train.CheckpointManager. Received: Checkpoint"):
        save_checkpoint(checkpoint)
    for number in (-1, 2.5, "3", True):
        with pytest.raises(ValueError, match=f"expected None or an integer >= 0. Received: checkpoint_number={number!r}"):
            save_checkpoint(manager, checkpoint_number=number)
    assert manager.checkpoints == [path]


def test_a_failed_save_removes_its_partial_files_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    variable = tf.Variable(tf.range(1000.0))
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), str(tmp_path), max_to_keep=1)
    first = save_checkpoint(manager, checkpoint_number=1)
    (tmp_path / "other_temp").mkdir()  # not this save's: left alone

    def disk_full(checkpoint_number=None):
        os.makedirs(tmp_path / f"ckpt-{checkpoint_number}_temp")
        (tmp_path / f"ckpt-{checkpoint_number}_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x" * 99)
        raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(manager, "save", disk_full)
    with pytest.raises(OSError, match=rf"partial files are removed; the latest complete checkpoint is {first}\): "
                       "No space left on device"):
        save_checkpoint(manager, checkpoint_number=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index",
                                                          "other_temp"]
    assert manager.latest_checkpoint == first
    variable.assign(tf.zeros(1000))
    restore_checkpoint(tf.train.Checkpoint(v=variable), first)
    np.testing.assert_array_equal(variable.numpy(), np.arange(1000.0))


def test_check_room_for_checkpoint_needs_the_latest_checkpoints_size_free(tmp_path, monkeypatch):
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=tf.Variable(tf.zeros(4096))), str(tmp_path / "c"),
                                         max_to_keep=1)
    assert check_room_for_checkpoint(manager) is None  # nothing saved yet
    path = save_checkpoint(manager)
    size = checkpoint_bytes(path)
    assert size == sum(os.path.getsize(f) for f in glob.glob(path + ".*")) > 4096 * 4
    usage = lambda free: lambda directory: types.SimpleNamespace(total=10 * size, used=0, free=free)  # noqa: E731
    monkeypatch.setattr(shutil, "disk_usage", usage(int(1.03 * size)))
    assert check_room_for_checkpoint(manager) == int(1.03 * size)
    monkeypatch.setattr(shutil, "disk_usage", usage(int(1.01 * size)))
    with pytest.raises(OSError, match=r"No room for the next checkpoint in .*: it needs .* GB \(the size of ckpt-1 "
                       r"and 2%\), .* GB are free") as info:
        check_room_for_checkpoint(manager)
    assert info.value.errno == errno.ENOSPC
    assert check_room_for_checkpoint(manager, margin=0) == int(1.01 * size)
    with pytest.raises(ValueError, match="No checkpoint at save_path="):
        checkpoint_bytes(str(tmp_path / "c" / "ckpt-9"))
    with pytest.raises(ValueError, match="expected a tf.train.CheckpointManager"):
        check_room_for_checkpoint(path)
    for margin in (-0.1, 1, True, "0.1"):
        with pytest.raises(ValueError, match=rf"expected a number in \[0, 1\). Received: margin={margin!r}"):
            check_room_for_checkpoint(manager, margin=margin)


def test_restore_checkpoint_rejects_a_checkpoint_that_does_not_match(tmp_path):
    path = tf.train.Checkpoint(model=_datalens(num_teachers=10)).save(str(tmp_path / "ten"))
    key = "model/teachers/shards/{}/m/0/.ATTRIBUTES/VARIABLE_VALUE"  # the first of its shard's keys
    eight = _datalens(num_teachers=8, seed=1)  # shards of 5 and 3 teachers
    kept = eight.teachers.shards[0]["params"][0].numpy()
    with pytest.raises(ValueError, match=r"does not match the model \(nothing was restored\); variables whose "
                       r"shape or dtype differ:\n  model/teachers/shards/1/m/0/.ATTRIBUTES/VARIABLE_VALUE: "
                       r"checkpoint bfloat16 \[5, 275, 6\], model bfloat16 \[3, 275, 6\]"):
        eight.restore_checkpoint(path)
    np.testing.assert_array_equal(eight.teachers.shards[0]["params"][0].numpy(), kept)  # nothing changed
    with pytest.raises(ValueError, match=f"missing from the checkpoint:(.|\n)*model/teachers/shards/2/"):
        _datalens(num_teachers=15).restore_checkpoint(path)
    with pytest.raises(ValueError, match=f"checkpoint values that no variable of the model takes:\n  {key.format(1)}"):
        _datalens(num_teachers=5).restore_checkpoint(path)
    with pytest.raises(ValueError, match=f"shape or dtype differ:\n  {key.format(0)}: checkpoint bfloat16 "
                       f"\\[5, 275, 6\\], model float32 \\[5, 275, 6\\]"):
        _datalens(weight_dtype="float32").restore_checkpoint(path)
    partial = tf.train.Checkpoint(model=tf.train.Checkpoint(privacy_steps=tf.Variable(3, dtype=tf.int64)))
    with pytest.raises(ValueError, match="missing from the checkpoint:\n  model/_rng/_state_var/"):
        _datalens().restore_checkpoint(partial.save(str(tmp_path / "partial")))
    with pytest.raises(ValueError, match="No readable checkpoint at save_path="):
        _datalens().restore_checkpoint(str(tmp_path / "nothing-1"))
    data = tmp_path / "ten-1.data-00000-of-00001"  # corrupt bytes fail the checksum of the tensor that holds them
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    data.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="Cannot read model/teachers/.* from the checkpoint .*ten-1"):
        _datalens().restore_checkpoint(path)


def test_bad_inputs_raise_clear_errors(digits):
    x, y = digits
    model = _datalens(num_teachers=10)
    with pytest.raises(ValueError, match="num_teachers"):
        model.set_data(x[:5], y[:5])
    with pytest.raises(ValueError, match="x_parts.*image shape|image shape"):
        model.set_partitions(np.zeros((10, 4, 28, 28, 1), np.uint8), np.zeros((10, 4), np.int64))
    with pytest.raises(ValueError, match="y_parts.*labels in"):
        model.set_partitions(np.zeros((10, 4) + SHAPE, np.uint8), np.full((10, 4), 10))
    parts = [np.zeros((4,) + SHAPE, np.uint8)] * 9 + [np.zeros((0,) + SHAPE, np.uint8)]
    with pytest.raises(ValueError, match="partition 9 is empty"):
        model.set_partitions(parts, [np.zeros(len(p), np.int64) for p in parts])
    with pytest.raises(ValueError, match="no sensitive data"):
        model.fit(steps_per_epoch=1)
    with pytest.raises(ValueError, match="takes no data"):
        model.fit(x, y, steps_per_epoch=1)
    with pytest.raises(ValueError, match="labels"):
        model.generate(3, labels=[0, 1, 10])
    with pytest.raises(ValueError, match="image shape"):
        DataLens(Generator(image_shape=(8, 8, 1), z_dim=4, dense_units=8, filters=4),
                 TeacherEnsemble(2, (28, 28, 1), 10, widths=WIDTHS), TopAgg(k=4, sigma=1.0, beta=0.1))
    with pytest.raises(ValueError, match="num_teachers"):
        TeacherEnsemble(0, SHAPE, 10)
    with pytest.raises(ValueError, match="weight_dtype"):
        TeacherEnsemble(2, SHAPE, 10, weight_dtype="float16")
    with pytest.raises(ValueError, match="convolution.*Received: convolution='fft'"):
        TeacherEnsemble(2, SHAPE, 10, convolution="fft")
    with pytest.raises(ValueError, match="image_gradient_dtype.*Received: image_gradient_dtype='float16'"):
        TeacherEnsemble(2, SHAPE, 10, image_gradient_dtype="float16")
    ens = _ensemble(n=2)
    real_x, real_y, fake_x, fake_y = _batch(4, n=2)
    with pytest.raises(ValueError, match="real_y.*labels in"):
        ens.teacher_step(real_x, real_y + 10, fake_x, fake_y)
    soft = np.full(fake_y.shape + (10,), 0.1, np.float32)  # sums to 1, but not one-hot
    with pytest.raises(ValueError, match="fake_y.*expected one-hot labels: rows of zeros with a single 1"):
        ens.image_gradients(fake_x, soft)
    ens.image_gradients(fake_x, np.eye(10, dtype=np.float32)[fake_y])  # one-hot is fine
    with pytest.raises(ValueError, match="real_x.*one row per teacher"):
        ens.teacher_step(np.concatenate([real_x, real_x]), real_y, fake_x, fake_y)
    with pytest.raises(ValueError, match="fake_x.*image_shape"):
        ens.image_gradients(np.zeros((3, 28, 28, 1), np.float32), fake_y[:3])


_WITHOUT_ONEDNN = """
import numpy as np
from dlens_tf.models import TeacherEnsemble
try:
    TeacherEnsemble(2, (8, 8, 1), 10, widths=(6, 10, 16), convolution="grouped")
except ValueError as e:
    print("grouped:", e)
ens = TeacherEnsemble(2, (8, 8, 1), 10, widths=(6, 10, 16), seed=0)
r = np.random.default_rng(0)
x, y = r.uniform(-1, 1, (2, 4, 8, 8, 1)).astype(np.float32), r.integers(0, 10, (2, 4))
before = ens((x, y)).numpy()
ens.teacher_step(x, y, x[0], y[0])
print("auto:", ens.convolution_in_use, bool(np.all(np.isfinite(ens.image_gradients(x[0], y[0])))),
      not np.array_equal(before, ens((x, y)).numpy()))
"""


def test_teachers_train_without_onednn():
    """Where TF's oneDNN kernels are off (the default on CPUs without AVX-512), teachers fall back to im2col."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    out = subprocess.run([sys.executable, "-c", _WITHOUT_ONEDNN], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "grouped: Received an invalid value for `convolution`" in out.stdout and "TF_ENABLE_ONEDNN_OPTS=1" in out.stdout
    assert "auto: im2col True True" in out.stdout and "TF_ENABLE_ONEDNN_OPTS=1" in out.stderr  # the fallback warns


_STEP_MEMORY = """
from dlens_tf.models import TeacherEnsemble
import numpy as np
import tensorflow as tf
n, m = {n}, 15
ens = TeacherEnsemble(n, (28, 28, 1), 10, chunk_size={chunk}, seed=0)
r = np.random.default_rng(0)
x = tf.constant(r.uniform(-1, 1, (1, n, m, 28, 28, 1)).astype(np.float32))
y = tf.constant(r.integers(0, 10, (1, n, m)))
step = tf.function(lambda: ens.train_and_image_gradients(lambda a, b: (x[:, a:b], y[:, a:b]), x[0, 0], y[0, 0], 1))
rss = int(open("/proc/self/statm").read().split()[1]) * 4096
step()[1].numpy()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so it would include the forking test process.
peak = [int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print("excess", (peak - rss) / (4 * ens.num_parameters()), ens.convolution_in_use)
"""


@pytest.mark.xdist_group("memory")  # the memory-measuring subprocesses run one at a time
def test_a_graph_step_holds_one_shard_of_working_memory():
    """Inside one tf.function (as under `fit`), each shard's float32 temporaries die with the shard.

    48 shards of paper-size MNIST teachers; the step's extra memory is measured in units of one
    float32 copy of ALL weights. Inlined shard calls kept about 1.4 such copies alive (measured);
    streaming bounds it to a few shards' worth.
    """
    code = _STEP_MEMORY.format(n=480, chunk=10)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    excess = float(out.stdout.split()[-2])
    assert excess < 0.5, out.stdout


_BUILD_MEMORY = """
from dlens_tf.models import TeacherEnsemble
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096  # noqa: E731
before = rss()
ens = TeacherEnsemble(500, (28, 28, 1), 10, shared_init=True, seed=0)
peak = [int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
stored = sum(v.shape.num_elements() * v.dtype.size for v in ens.variables)
print("excess", (peak - before - stored) / stored, (rss() - before - stored) / stored, ens.weight_dtype)
"""


@pytest.mark.xdist_group("memory")  # the memory-measuring subprocesses run one at a time
def test_building_shared_init_teachers_touches_little_beyond_their_state():
    """500 paper-size bfloat16 teachers in a fresh process: peak and resident memory over the stored state.

    Broadcasting the shared float32 initial weights to a shard before casting them left 0.43 of the
    state's size resident (measured; 2.4 GB more peak RSS and 30 s more start-up at 4000 teachers,
    where first-touched memory is slow); casting first, 0.08.
    """
    out = subprocess.run([sys.executable, "-c", _BUILD_MEMORY], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    peak, resident, dtype = out.stdout.split()[-3:]
    assert dtype == "bfloat16" and float(peak) < 0.2 and float(resident) < 0.2, out.stdout


def test_batch_norm_uses_each_batchs_own_statistics():
    ens = _ensemble(weight_dtype="float32", batch_norm=True)
    real_x, real_y, fake_x, fake_y = _batch(2)
    assert len(ens.teacher_weights(0)) == 12
    ens.teacher_step(real_x, real_y, fake_x, fake_y)
    scale = ens.teacher_weights(1)[4]
    assert scale.shape == (WIDTHS[1],) and not np.allclose(scale, 1.0)  # conv2's scale, trained from 1
    logits = ens((fake_x, fake_y)).numpy()
    other = fake_x.copy()
    other[0] = -other[0]  # another record of the batch moves every record's statistics
    assert not np.allclose(ens((other, fake_y)).numpy()[:, 1:], logits[:, 1:])
    restored = TeacherEnsemble.from_config(ens.get_config())
    assert restored.batch_norm is True and len(restored.teacher_weights(0)) == 12
    with pytest.raises(ValueError, match="`batch_norm`"):
        _ensemble(batch_norm=1)


def test_translation_shifts_each_image_by_its_own_offset():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 4) + SHAPE).astype(np.float32)
    out = translate(tf.constant(x), 2, tf.constant([1, 2])).numpy()
    shifts = set()
    for i in range(3):
        for j in range(4):
            padded = np.pad(x[i, j], [[2, 2], [2, 2], [0, 0]], constant_values=-1.0)
            found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                     if np.array_equal(padded[2 - dy:10 - dy, 2 - dx:10 - dx], out[i, j])]
            assert found, (i, j)  # a shifted copy, background shifted in
            shifts.add(found[0])
    assert len(shifts) > 3  # the images do not share one shift
    np.testing.assert_array_equal(translate(tf.constant(x), 2, tf.constant([1, 2])), out)  # stateless


def test_translation_changes_training_only_and_checks_its_value():
    real_x, real_y, fake_x, fake_y = _batch(3)
    plain, shifted = _ensemble(weight_dtype="float32"), _ensemble(weight_dtype="float32", translation=2)
    np.testing.assert_array_equal(plain.image_gradients(fake_x, fake_y), shifted.image_gradients(fake_x, fake_y))
    plain.teacher_step(real_x, real_y, fake_x, fake_y)
    shifted.teacher_step(real_x, real_y, fake_x, fake_y)
    assert not np.array_equal(plain.teacher_weights(0)[0], shifted.teacher_weights(0)[0])
    assert TeacherEnsemble.from_config(shifted.get_config()).translation == 2
    for bad in (-1, 8, True, 1.5):
        with pytest.raises(ValueError, match="`translation`"):
            _ensemble(translation=bad)


_RESTORE_MEMORY = """
import glob, os
from dlens_tf.presets import get_preset
import tensorflow as tf
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096  # noqa: E731
preset = get_preset("mnist_eps1").replace(num_teachers={n})
saved = preset.build((28, 28, 1), 10, seed=0)
path = tf.train.Checkpoint(model=saved).save({prefix!r})
size = sum(os.path.getsize(f) for f in glob.glob(path + ".data-*"))
model = preset.build((28, 28, 1), 10, seed=1)
before = rss()
model.restore_checkpoint(path)
growth = (rss() - before) / size
same = all(bool(tf.reduce_all(a == b)) for a, b in zip(saved.teachers.variables, model.teachers.variables))
print("growth", growth, same, len(model.teachers.variables))
"""


@pytest.mark.xdist_group("memory")  # the memory-measuring subprocesses run one at a time
def test_restore_checkpoint_holds_one_variable_not_the_checkpoint(tmp_path):
    """Resuming 400 paper-size MNIST teachers (a 0.92 GB checkpoint) in a fresh process.

    `tf.train.Checkpoint.restore` reads every tensor in one op, and TF's allocator keeps that peak:
    RSS grew by 0.79 checkpoint sizes (measured). `restore_checkpoint` reads one variable at a time:
    0.003.
    """
    code = _RESTORE_MEMORY.format(n=400, prefix=str(tmp_path / "ckpt"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    _, growth, same, count = out.stdout.split()[-4:]
    assert same == "True" and int(count) == 4 * 27 + 1, out.stdout
    assert float(growth) < 0.3, out.stdout
