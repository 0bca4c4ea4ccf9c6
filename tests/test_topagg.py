"""TopAgg: sensitivity, noise scale, threshold, XLA parity, config, DPQuery front door."""

import math

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from dlens_tf import TopAgg, TopAggQuery
from dlens_tf.privacy.topagg import compress, vote_agreement


def _adversarial_gradients(n=6, batch=3, d=20):
    g = np.random.default_rng(0).normal(size=(n, batch, d)).astype(np.float32)
    g[0, 0] = np.nan
    g[1, 1, :5] = np.inf
    g[1, 1, 5:9] = -np.inf
    g[2] = 0.0
    g[3, :, :] = 1.0  # ties everywhere
    g[4, 2, ::2] = 1e30
    g[5, 0] = np.float32(1e-45)  # subnormals
    return g


@pytest.mark.parametrize("k", [1, 7, 20])
def test_each_teacher_contributes_exactly_k_signs(k):
    g = _adversarial_gradients()
    out = compress(tf.constant(g), k, clip=1e-5, seed=tf.constant([3, 4])).numpy()
    assert set(np.unique(out)) <= {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal((out != 0).sum(-1), np.full(g.shape[:2], k))


def test_sensitivity_bound_between_neighbouring_ensembles():
    """Replacing one teacher's gradients moves the pre-noise sum by at most 2 sqrt(k) in L2."""
    k, rng = 5, np.random.default_rng(1)
    g = rng.normal(size=(8, 4, 30)).astype(np.float32)
    g2 = g.copy()
    g2[3] = -g[3] * 1e6  # the adversary's teacher
    seed = tf.constant([7, 7])
    s1 = tf.reduce_sum(compress(tf.constant(g), k, None, seed), 0).numpy()
    s2 = tf.reduce_sum(compress(tf.constant(g2), k, None, seed), 0).numpy()
    assert np.all(np.linalg.norm(s1 - s2, axis=-1) <= 2 * math.sqrt(k) + 1e-6)


def test_noise_standard_deviation_matches_sigma():
    sigma, layer = 3.0, TopAgg(k=2, sigma=3.0, beta=0.0, seed=11)
    g = tf.zeros([4, 50, 100])  # every teacher votes +-1 on 2 coordinates: sum is known where no vote
    votes_sum = tf.reduce_sum(compress(g, 2, None, tf.constant([0, 0])), 0)
    _, noisy = layer.aggregate(g)
    residual = noisy.numpy()[votes_sum.numpy() == 0]  # coordinates nobody voted on: pure noise
    n = residual.size
    assert abs(residual.mean()) < 5 * sigma / math.sqrt(n)
    assert abs(residual.std() - sigma) < 5 * sigma / math.sqrt(2 * n)


def test_noise_only_keep_rate_is_the_share_of_unvoted_coordinates_kept():
    # 40 teachers, k = 1 of 2000 coordinates: nearly every coordinate's clean sum is 0, so what the vote keeps
    # there is noise alone passing beta * N = 28 at sigma = 35 (erfc(0.8 / sqrt 2) = 0.424).
    layer = TopAgg(k=1, sigma=35.0, beta=0.7, seed=3)
    g = tf.zeros([40, 20, 2000])
    votes_sum = tf.reduce_sum(compress(g, 1, None, tf.constant([0, 0])), 0).numpy()
    votes = layer(g).numpy()[votes_sum == 0]
    rate, n = layer.noise_only_keep_rate(40), votes.size
    assert rate == pytest.approx(math.erfc(0.8 / math.sqrt(2)))
    assert abs(np.mean(votes != 0) - rate) < 5 * math.sqrt(rate * (1 - rate) / n)
    assert TopAgg(k=1, sigma=35.0, beta=0.0).noise_only_keep_rate(40) == 1.0
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="`num_teachers`"):
            layer.noise_only_keep_rate(bad)


def test_vote_threshold_and_output_values():
    # 10 teachers agree on coordinate 0 (+) and 1 (-); tiny noise; beta=0.5 keeps only unanimous coordinates.
    g = np.zeros([10, 1, 6], np.float32)
    g[:, 0, 0], g[:, 0, 1] = 5.0, -5.0
    g[:5, 0, 2] = 5.0  # half the teachers: below the 0.5 * 10 threshold
    out = TopAgg(k=3, sigma=1e-3, beta=0.6, seed=0)(tf.constant(g)).numpy()
    assert out[0, 0] == 1 and out[0, 1] == -1
    assert np.all(out[0, 2:] == 0)


def test_vote_agreement_extremes():
    g = np.random.default_rng(0).normal(size=(1, 3, 8, 8, 1)).astype(np.float32) + 5.0  # |g| >= 1 nearly always
    alike = np.repeat(g, 6, axis=0)
    assert vote_agreement(alike, 5, 1e-3, 0) == (1.0, 1.0)  # same coordinates, same (deterministic) signs
    opposed = np.concatenate([alike[:3], -alike[3:]])
    assert vote_agreement(opposed, 5, 1e-3, 0)[0] == 0.0  # the two halves cancel
    # A clip above max |g|, or none: the scale is max |g|, so only each row's maximum has a sure sign.
    assert vote_agreement(alike, 5, 100.0, 0)[1] == vote_agreement(alike, 5, None, 0)[1] == 1 / 5
    for args, name in (((alike[0, 0, :, :, 0], 5, 1e-3), "gradients"), ((alike, 65, 1e-3), "k"), ((alike, 0, 1e-3), "k"),
                       ((alike, 5, -1.0), "clip")):
        with pytest.raises(ValueError, match=f"`{name}`"):
            vote_agreement(*args, 0)


def test_xla_and_eager_paths_give_identical_votes():
    g = tf.constant(_adversarial_gradients(n=30, batch=4, d=64))
    eager, compiled = TopAgg(k=8, sigma=2.0, beta=0.05, seed=5), TopAgg(k=8, sigma=2.0, beta=0.05, seed=5)
    xla = tf.function(compiled.aggregate, jit_compile=True)
    for _ in range(2):
        (v1, n1), (v2, n2) = eager.aggregate(g), xla(g)
        np.testing.assert_array_equal(v1.numpy(), v2.numpy())
        np.testing.assert_allclose(n1.numpy(), n2.numpy(), rtol=1e-5, atol=1e-5)


def test_output_shape_and_dp_event():
    layer = TopAgg(k=4, sigma=100.0, beta=0.1)
    assert layer(tf.random.normal([5, 3, 8, 8, 1])).shape == (3, 8, 8, 1)
    event = layer.dp_event(30)
    assert event.count == 30 and event.event.noise_multiplier == pytest.approx(100.0 / (2 * 2))


def test_config_round_trip_and_keras_serialization():
    layer = TopAgg(k=4, sigma=10.0, beta=0.3, clip=1e-5, seed=2, name="agg")
    clone = TopAgg.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, TopAgg) and restored.k == 4 and restored.clip == 1e-5


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(k=0, sigma=1.0, beta=0.1), "k"),
        (dict(k=2.5, sigma=1.0, beta=0.1), "k"),
        (dict(k=2, sigma=0.0, beta=0.1), "sigma"),
        (dict(k=2, sigma=float("nan"), beta=0.1), "sigma"),
        (dict(k=2, sigma=1.0, beta=-0.1), "beta"),
        (dict(k=2, sigma=1.0, beta=0.1, clip=0.0), "clip"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        TopAgg(**kwargs)


def test_bad_shapes():
    with pytest.raises(ValueError, match="num_teachers, batch"):
        TopAgg(k=2, sigma=1.0, beta=0.1)(tf.zeros([4, 5]))
    with pytest.raises(ValueError, match="`k`"):
        TopAgg(k=50, sigma=1.0, beta=0.1)(tf.zeros([4, 2, 7]))


def test_dp_query_contributes_k_signs_over_the_whole_nest():
    query = TopAggQuery(k=4, sigma=1.0, beta=0.1, num_records=3, seed=0)
    record = [tf.constant([[np.nan, 1.0], [np.inf, 0.0]]), tf.constant([2.0, -3.0, 0.5])]
    out = query.preprocess_record(query.derive_sample_params(query.initial_global_state()), record)
    flat = np.concatenate([t.numpy().ravel() for t in out])
    assert (flat != 0).sum() == 4 and set(np.unique(flat)) <= {-1.0, 0.0, 1.0}
    assert query.get_dp_event().noise_multiplier == pytest.approx(1.0 / 4)


def test_dp_query_drives_tf_privacy_generic_optimizer():
    from tensorflow_privacy.privacy.optimizers.dp_optimizer_keras import make_keras_generic_optimizer_class

    optimizer_class = make_keras_generic_optimizer_class(keras.optimizers.legacy.SGD)
    query = TopAggQuery(k=2, sigma=0.5, beta=0.0, num_records=8, seed=0)
    optimizer = optimizer_class(query, num_microbatches=8, learning_rate=0.1)
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(4,), use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=optimizer, loss=keras.losses.MeanSquaredError(reduction="none"))
    x = np.ones([8, 4], np.float32)
    model.fit(x, np.ones([8, 1], np.float32), batch_size=8, epochs=1, verbose=0)
    step = model.get_weights()[0].ravel()
    # The update is lr * mean-of-microbatches of a {-1,0,1} vote: every entry is a multiple of 0.1/8.
    np.testing.assert_allclose(step * 80 - np.round(step * 80), 0, atol=1e-5)
    assert np.any(step != 0)
