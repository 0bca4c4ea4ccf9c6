"""Each mechanism's claimed sensitivity holds on adversarial inputs, its noise has the claimed scale,
and its DpEvent is built from exactly those two numbers."""

import itertools
import math

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf

from dlens_tf.privacy import mechanisms

SHAPES = [(6, 5), (5,), (3, 3, 2, 4), (4,)]  # matrices (incl. a conv kernel) and vectors
D = sum(math.prod(s) for s in SHAPES)
C = 1.5

CONFIGS = [
    ("gaussian", {}),
    ("topagg", {"rate": 0.1}),
    ("topagg", {"k": 7, "sign_clip": 0.01}),
    ("topk", {"rate": 0.1, "noise_placement": "after"}),
    ("topk", {"rate": 0.1, "noise_placement": "before"}),
    ("randk", {"rate": 0.2, "noise_placement": "after"}),
    ("randk", {"rate": 0.2, "noise_placement": "before"}),
    ("lowrank", {"rank": 2, "noise_placement": "after"}),
    ("lowrank", {"rank": 2, "noise_placement": "before"}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in c.items())}" for n, c in CONFIGS]


def build(name, config, z=1.0):
    m = mechanisms.get(name, l2_norm_clip=C, noise_multiplier=z, **config)
    m.build(SHAPES)
    return m


def adversarial_rows(rng):
    """Rows of norm exactly C (and one zero row): spikes, flat, dense random, one variable only, all-negative."""
    rows = [np.zeros(D)]
    for j in (0, 7, D - 1):
        spike = np.zeros(D)
        spike[j] = C
        rows.append(spike)
    rows.append(np.full(D, C / math.sqrt(D)))
    rows.append(-np.full(D, C / math.sqrt(D)))
    for _ in range(6):
        v = rng.standard_normal(D) * rng.choice([1e-3, 1.0, 1e3])
        rows.append(C * v / np.linalg.norm(v))
    first = np.zeros(D)
    first[:30] = rng.standard_normal(30)
    rows.append(C * first / np.linalg.norm(first))
    heavy = rng.standard_normal(D) ** 3
    rows.append(C * heavy / np.linalg.norm(heavy))
    return np.stack(rows).astype(np.float32)


def worst_case_row(mech, seed, rng):
    """Power iteration on r -> d||contribution(r)||^2/dr at ||r|| = C: the row whose contribution is
    largest for this seed's public randomness (exact for the linear compressors randk/lowrank;
    TopAgg's sign has no gradient, and its contributions have norm sqrt(k) for every row)."""
    r = rng.standard_normal(D).astype(np.float32)
    for _ in range(15):
        r = tf.constant(C * r / np.linalg.norm(r), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(r)
            energy = tf.reduce_sum(mech.contributions(r[None], tf.constant(seed, tf.int64)) ** 2)
        grad = tape.gradient(energy, r)
        if grad is None:
            break
        r = grad.numpy()
    r = np.asarray(r, np.float64)
    return (C * r / np.linalg.norm(r)).astype(np.float32)


def presum(mech, rows, weights, seed):
    """The pre-noise aggregate: weighted sum of the contributions, as `aggregate` forms it."""
    contributions = mech.contributions(tf.constant(rows), tf.constant(seed, tf.int64))
    return tf.linalg.matvec(contributions, tf.constant(weights, tf.float32), transpose_a=True).numpy()


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_neighbouring_batches_differ_by_at_most_the_sensitivity(name, config):
    mech = build(name, config)
    rng = np.random.default_rng(0)
    worst_add_remove = worst_replace = 0.0
    for seed in ([1, 2], [123, 77]):
        worst = worst_case_row(mech, seed, rng)
        rows = np.concatenate([adversarial_rows(rng), [worst, -worst]])
        n = len(rows)
        full = presum(mech, rows, np.ones(n), seed)
        for j in range(n):
            # add/remove-one: example j is absent (weight 0); every other row keeps its randomness
            w = np.ones(n)
            w[j] = 0.0
            worst_add_remove = max(worst_add_remove, np.linalg.norm(full - presum(mech, rows, w, seed)))
        for i, j in itertools.combinations(range(n), 2):
            # replace-one: example i replaced by example j's record
            replaced = rows.copy()
            replaced[i] = rows[j]
            worst_replace = max(worst_replace, np.linalg.norm(full - presum(mech, replaced, np.ones(n), seed)))
    assert worst_add_remove <= mech.sensitivity("add_remove") * (1 + 1e-5)
    assert worst_replace <= mech.sensitivity("replace_one") * (1 + 1e-5)
    # the bounds are attained: an overstated sensitivity would not pass silently either
    assert worst_add_remove >= mech.sensitivity("add_remove") * (1 - 1e-4)
    assert worst_replace >= mech.sensitivity("replace_one") * (1 - 1e-4)


def test_sensitivity_values():
    assert build("gaussian", {}).sensitivity("add_remove") == C
    assert build("gaussian", {}).sensitivity("replace_one") == 2 * C
    topagg = build("topagg", {"k": 9})
    assert topagg.sensitivity("add_remove") == 3.0 and topagg.sensitivity("replace_one") == 6.0
    for name, config in CONFIGS[3:]:
        assert build(name, config).sensitivity("add_remove") == C
    with pytest.raises(ValueError, match="adjacency"):
        build("gaussian", {}).sensitivity("swap")


@pytest.mark.parametrize("name,config", CONFIGS, ids=IDS)
def test_dp_event_matches_noise_over_sensitivity(name, config):
    mech = build(name, config, z=1.3)
    assert mech.noise_stddev == pytest.approx(1.3 * mech.sensitivity("add_remove"))
    assert mech.dp_event(0.01) == dp_accounting.PoissonSampledDpEvent(
        0.01, dp_accounting.GaussianDpEvent(mech.noise_stddev / mech.sensitivity("add_remove")))
    assert mech.dp_event(None) == dp_accounting.GaussianDpEvent(mech.noise_stddev / mech.sensitivity("replace_one"))
    with pytest.raises(ValueError, match="sampling_probability"):
        mech.dp_event(1.5)


def _noise_only(mech, batch=4):
    zeros = tf.zeros([batch, D])
    return mech.aggregate(zeros, tf.zeros([batch]), tf.constant([3, 4]), 1.0).numpy()


@pytest.mark.parametrize("z", [0.7, 2.0])
def test_gaussian_noise_has_stddev_z_times_clip(z):
    shapes = [(200, 100)]
    mech = mechanisms.get("gaussian", l2_norm_clip=C, noise_multiplier=z)
    mech.build(shapes)
    out = mech.aggregate(tf.zeros([2, 20000]), tf.zeros([2]), tf.constant([3, 4]), 1.0).numpy()
    assert np.std(out) == pytest.approx(z * C, rel=0.03)
    assert abs(np.mean(out)) < 0.05 * z * C


def test_topagg_noise_has_stddev_z_sqrt_k():
    # with threshold t = sigma, a pure-noise vote is non-zero with probability P(|N(0, sigma^2)| > sigma) = 0.3173
    k, z = 16, 0.5
    mech = mechanisms.get("topagg", l2_norm_clip=C, noise_multiplier=z, k=k, beta=z * math.sqrt(k))
    mech.build([(200, 100)])
    votes = mech.aggregate(tf.zeros([2, 20000]), tf.zeros([2]), tf.constant([3, 4]), 1.0).numpy()
    assert set(np.unique(votes)) <= {-1.0, 0.0, 1.0}
    assert np.mean(votes != 0) == pytest.approx(0.3173, abs=0.015)


def test_randk_before_draws_noise_only_on_the_kept_coordinates():
    mech = build("randk", {"rate": 0.2, "noise_placement": "before"}, z=2.0)
    out = _noise_only(mech)
    assert np.count_nonzero(out) == mech.kept
    after = build("randk", {"rate": 0.2, "noise_placement": "after"}, z=2.0)
    assert np.array_equal(np.flatnonzero(_noise_only(after)), np.flatnonzero(out))  # same public coordinates


def test_lowrank_before_noise_lives_in_the_factors():
    shapes = [(300, 40)]
    mech = mechanisms.get("lowrank", l2_norm_clip=C, noise_multiplier=1.0, rank=3, noise_placement="before")
    mech.build(shapes)
    out = mech.aggregate(tf.zeros([2, 12000]), tf.zeros([2]), tf.constant([3, 4]), 1.0).numpy().reshape(300, 40)
    assert np.linalg.matrix_rank(out, tol=1e-4) == 3
    assert np.sum(out**2) == pytest.approx(C**2 * 300 * 3, rel=0.1)  # rows * r noisy factor entries


def test_compressed_updates_have_the_promised_sparsity_and_rank():
    rng = np.random.default_rng(1)
    rows = tf.constant(adversarial_rows(rng))
    w = tf.ones([rows.shape[0]])
    for placement in ("after", "before"):
        topk = build("topk", {"rate": 0.1, "noise_placement": placement})
        assert np.count_nonzero(topk.aggregate(rows, w, tf.constant([1, 1]), 8.0).numpy()) == topk.kept
        lowrank = build("lowrank", {"rank": 1, "noise_placement": placement})
        update = lowrank.split(lowrank.aggregate(rows, w, tf.constant([1, 1]), 8.0))
        assert np.linalg.matrix_rank(update[0].numpy(), tol=1e-5) == 1
        assert np.linalg.matrix_rank(update[2].numpy().reshape(-1, 4), tol=1e-5) == 1


def test_error_feedback_keeps_what_compression_dropped():
    mech = build("topk", {"rate": 0.1, "error_feedback": True}, z=0.0)
    g = tf.constant(adversarial_rows(np.random.default_rng(2)))
    w = tf.ones([g.shape[0]])
    first = mech.aggregate(g, w, tf.constant([1, 1]), 1.0)
    dense = tf.reduce_sum(g, axis=0)
    np.testing.assert_allclose((first + mech.residual).numpy(), dense.numpy(), atol=1e-5)
    second = mech.aggregate(g, w, tf.constant([2, 1]), 1.0)
    np.testing.assert_allclose((first + second + mech.residual).numpy(), 2 * dense.numpy(), atol=1e-4)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"l2_norm_clip": 0.0}, "l2_norm_clip"),
        ({"l2_norm_clip": -1.0}, "l2_norm_clip"),
        ({"noise_multiplier": -0.1}, "noise_multiplier"),
        ({"noise_multiplier": float("nan")}, "noise_multiplier"),
    ],
)
def test_invalid_common_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        mechanisms.get("gaussian", **kwargs)


@pytest.mark.parametrize(
    "name,kwargs,argument",
    [
        ("nonsense", {}, "mechanism"),
        ("topk", {"rate": 0.0}, "rate"),
        ("randk", {"rate": 1.5}, "rate"),
        ("topk", {"noise_placement": "middle"}, "noise_placement"),
        ("randk", {"noise_placement": "before", "error_feedback": True}, "error_feedback"),
        ("lowrank", {"rank": 0}, "rank"),
        ("topagg", {"beta": -1.0}, "beta"),
        ("topagg", {"k": 0}, "k"),
    ],
)
def test_invalid_mechanism_arguments(name, kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        mechanisms.get(name, **kwargs)


def test_topagg_k_larger_than_the_model_is_refused():
    with pytest.raises(ValueError, match="`k`"):
        build("topagg", {"k": D + 1})


def test_config_round_trip():
    for name, config in CONFIGS:
        mech = build(name, config, z=0.8)
        again = type(mech).from_config(mech.get_config())
        assert again.get_config() == mech.get_config()
