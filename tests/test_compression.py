"""Top-k selection, stochastic sign and the counter-based RNG (dlens_tf.compression)."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from dlens_tf.compression import rng, stochastic_sign, topk_mask, topk_stochastic_sign
from dlens_tf.privacy.topagg import TopAgg

SEED = tf.constant([7, 11])


def magnitude_bits(g):
    """|g| as ordered integers (exact for subnormals whatever the FPU flush mode), NaN -> 0."""
    bits = g.view(np.uint32) & 0x7FFFFFFF
    return np.where(bits > 0x7F800000, 0, bits).astype(np.int64)


def reference_mask(g, k):
    """Stable order by (-|g| with NaN -> 0, index); the first k of each row."""
    mag = magnitude_bits(g)
    idx = np.arange(g.shape[1])
    mask = np.zeros(g.shape, bool)
    for r in range(g.shape[0]):
        order = np.lexsort((idx, -mag[r]))
        mask[r, order[:k]] = True
    return mask


def check_selection(g, k, clip=None, seed=SEED):
    """Mask matches the reference; the quantised output is +-1 exactly there, 0 elsewhere."""
    mask = topk_mask(tf.constant(g), k).numpy()
    np.testing.assert_array_equal(mask, reference_mask(g, k))
    out = topk_stochastic_sign(tf.constant(g), k, clip=clip, seed=seed).numpy()
    assert np.all(np.isin(out, [-1.0, 1.0]) == mask)
    assert np.all(out[~mask] == 0.0)
    np.testing.assert_array_equal(np.count_nonzero(out, axis=1), np.full(g.shape[0], k))
    return out


def as_bits(values):
    return np.array(values, np.float32).view(np.uint32).tolist()


# Bit patterns that stress magnitude ordering: NaNs (both signs, two payloads), +-inf, signed zeros,
# subnormals (smallest, largest), extremes and small integers (ties).
SPECIAL_BITS = as_bits([np.inf, -np.inf, 0.0, -0.0, 3.4e38, -3.4e38, 1.0, -1.0, 0.5, 2.0, -2.0]) + [
    0x7FC00000, 0xFFC00000, 0x7F800001, 0x00000001, 0x80000001, 0x007FFFFF, 0x00000002,
]


@st.composite
def rows_and_k(draw, max_rows=6, min_d=1, max_d=48):
    d = draw(st.integers(min_d, max_d))
    rows = draw(st.integers(1, max_rows))
    pool = st.one_of(
        st.sampled_from(SPECIAL_BITS),
        st.integers(0, 2**32 - 1),
        st.floats(-10, 10, width=32).map(lambda x: as_bits([x])[0]),
    )
    g = draw(hnp.arrays(np.uint32, (rows, d), elements=pool)).view(np.float32)
    k = draw(st.integers(1, d))
    return g, k


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows_and_k(), st.one_of(st.none(), st.sampled_from([1e-30, 0.3, 1.0, 1e30])))
def test_exactly_k_signs_matching_reference_for_any_input(case, clip):
    g, k = case
    check_selection(g, k, clip=clip)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rows_and_k(max_rows=40, min_d=128, max_d=300))
def test_fast_selection_matches_reference_for_any_input(case):
    """Rows long enough for the counting-pass thresholds (and their exact fallback)."""
    g, k = case
    check_selection(g, k)


def test_fast_thresholds_with_a_few_rows_patched_exactly():
    r = np.random.default_rng(9)
    g = r.standard_normal((600, 784)).astype(np.float32)
    g[::60] = np.round(g[::60] * 2)  # ties at the k-th magnitude: no threshold separates them
    check_selection(g, 200)


@pytest.mark.parametrize(
    "name, make",
    [
        ("all_zero", lambda r: np.zeros((4, 784), np.float32)),
        ("constant", lambda r: np.full((4, 784), -3.0, np.float32)),
        ("all_nan", lambda r: np.full((3, 784), np.nan, np.float32)),
        ("all_inf", lambda r: np.where(r.random((3, 784)) < 0.5, np.inf, -np.inf).astype(np.float32)),
        ("few_levels", lambda r: r.integers(-3, 4, (8, 784)).astype(np.float32)),
        ("subnormal", lambda r: (r.integers(0, 2**23, (4, 784)) | (r.integers(0, 2, (4, 784)) << 31)).astype(np.uint32).view(np.float32)),
        ("huge", lambda r: (r.standard_normal((4, 784)) * 1e37).astype(np.float32)),
        ("heavy_tail", lambda r: r.standard_cauchy((8, 784)).astype(np.float32) ** 3),
        ("sparse", lambda r: np.where(r.random((8, 784)) < 0.1, r.standard_normal((8, 784)), 0.0).astype(np.float32)),
        (
            "mixed_nonfinite",
            lambda r: np.where(
                r.random((8, 784)) < 0.2, r.choice([np.nan, np.inf, -np.inf], (8, 784)), r.standard_normal((8, 784))
            ).astype(np.float32),
        ),
        ("normal_many_rows", lambda r: r.standard_normal((300, 784)).astype(np.float32)),
    ],
)
@pytest.mark.parametrize("k", [1, 200, 783, 784])
def test_adversarial_rows(name, make, k):
    g = make(np.random.default_rng(len(name) * 1000 + k))
    check_selection(g, k)


def test_odd_row_lengths_and_rows_mixing_fast_and_slow_cases():
    r = np.random.default_rng(3)
    for d, k in [(1, 1), (2, 1), (7, 3), (97, 50), (1000, 1), (1000, 999), (4099, 1000)]:
        g = r.standard_normal((5, d)).astype(np.float32)
        g[1] = 0.0
        g[2, : d // 2] = np.nan
        g[3] = np.round(g[3])
        check_selection(g, k)


def test_topk_mask_works_under_xla_with_unknown_row_count():
    g = np.random.default_rng(1).standard_normal((50, 300)).astype(np.float32)
    g[::7] = 1.0
    fn = tf.function(lambda x: topk_mask(x, 30), jit_compile=True, input_signature=[tf.TensorSpec([None, 300])])
    np.testing.assert_array_equal(fn(g).numpy(), reference_mask(g, 30))


def _tiled_draws(vec, n, k, clip, seed=SEED):
    g = tf.constant(np.tile(np.asarray(vec, np.float32), (n, 1)))
    return topk_stochastic_sign(g, k, clip=clip, seed=seed).numpy()


@pytest.mark.parametrize("clip", [None, 1.5])
def test_stochastic_sign_is_unbiased(clip):
    vec = np.array([3.0, -2.0, 1.0, -0.5, 0.25, 0.0, 2.5, -3.0, 0.01, 0.1], np.float32)
    k, n = 8, 40000
    draws = _tiled_draws(vec, n, k, clip)
    mask = reference_mask(vec[None], k)[0]
    b = np.abs(vec[mask]).max() if clip is None else min(np.abs(vec[mask]).max(), clip)
    expected = np.clip(vec / b, -1.0, 1.0) * mask
    mean = draws.mean(axis=0)
    # Each draw is +-1 with mean m, so its variance is 1 - m^2; allow 5 standard errors.
    tol = 5.0 * np.sqrt(np.maximum(1.0 - expected**2, 1.0 / n) / n)
    assert np.all(np.abs(mean - expected) <= tol), (mean, expected, tol)
    assert np.all(draws[:, ~mask] == 0.0)


def test_stochastic_sign_non_finite_and_zero_scale():
    n = 20000
    draws = _tiled_draws([np.inf, -np.inf, 5.0, np.nan, 0.0], n, 4, None)
    np.testing.assert_array_equal(draws[:, :2], np.tile([1.0, -1.0], (n, 1)))  # inf keeps its sign
    assert np.all(draws[:, 4] == 0.0)  # the zero is ranked after the NaN (lower index wins the tie at 0)
    # b = inf: the finite 5.0 and the NaN (value 0) are fair coins.
    assert np.all(np.abs(draws[:, 2:4].mean(axis=0)) < 5.0 / np.sqrt(n))
    zeros = _tiled_draws([0.0, 0.0, 0.0], n, 2, None)  # b = 0: fair coins
    assert np.all(np.abs(zeros[:, :2].mean(axis=0)) < 5.0 / np.sqrt(n))
    assert np.all(zeros[:, 2] == 0.0)


def test_stochastic_sign_with_explicit_mask():
    g = tf.constant([[4.0, -2.0, 1.0, 8.0]])
    mask = tf.constant([[True, True, False, False]])
    out = stochastic_sign(g, mask, clip=None, seed=SEED).numpy()
    assert out[0, 0] == 1.0 and out[0, 2:].tolist() == [0.0, 0.0] and out[0, 1] in (-1.0, 1.0)


def test_same_seed_same_draws_and_different_seed_different_draws():
    g = tf.constant(np.random.default_rng(0).standard_normal((20, 100)).astype(np.float32))
    a = topk_stochastic_sign(g, 40, seed=tf.constant([1, 2])).numpy()
    np.testing.assert_array_equal(a, topk_stochastic_sign(g, 40, seed=tf.constant([1, 2])).numpy())
    assert not np.array_equal(a, topk_stochastic_sign(g, 40, seed=tf.constant([1, 3])).numpy())


def test_xla_and_eager_give_identical_signs():
    r = np.random.default_rng(5)
    g = r.standard_normal((64, 784)).astype(np.float32)
    g[3] = 0.0
    g[4, ::3] = np.nan
    g[5] = np.round(g[5])
    g = tf.constant(g)
    fn = tf.function(lambda x, s: topk_stochastic_sign(x, 200, clip=0.8, seed=s), jit_compile=True)
    for seed in ([0, 0], [123, -4]):
        np.testing.assert_array_equal(fn(g, tf.constant(seed)).numpy(), topk_stochastic_sign(g, 200, 0.8, tf.constant(seed)).numpy())


def test_topagg_votes_identical_with_and_without_xla():
    g = tf.constant(np.random.default_rng(2).standard_normal((50, 3, 28, 28)).astype(np.float32))
    eager = TopAgg(k=100, sigma=3.0, beta=0.1, clip=0.5, seed=42)
    compiled = TopAgg(k=100, sigma=3.0, beta=0.1, clip=0.5, seed=42)
    xla = tf.function(compiled.aggregate, jit_compile=True)
    for _ in range(2):
        (v1, n1), (v2, n2) = eager.aggregate(g), xla(g)
        np.testing.assert_array_equal(v1.numpy(), v2.numpy())
        np.testing.assert_allclose(n1.numpy(), n2.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("k", [0, -1, 2.0, True, None, 11])
def test_bad_k_is_rejected(k):
    with pytest.raises(ValueError, match="`k`"):
        topk_stochastic_sign(tf.zeros([2, 10]), k, seed=SEED)
    with pytest.raises(ValueError, match="`k`"):
        topk_mask(tf.zeros([2, 10]), k)


@pytest.mark.parametrize("clip", [0.0, -1.0, float("nan"), "1"])
def test_bad_clip_is_rejected(clip):
    with pytest.raises(ValueError, match="`clip`"):
        topk_stochastic_sign(tf.zeros([2, 10]), 3, clip=clip, seed=SEED)
    with pytest.raises(ValueError, match="`clip`"):
        stochastic_sign(tf.zeros([2, 10]), tf.ones([2, 10], tf.bool), clip, SEED)


@pytest.mark.parametrize("shape", [[10], [2, 3, 10], []])
def test_wrong_rank_is_rejected(shape):
    with pytest.raises(ValueError, match="`g`"):
        topk_mask(tf.zeros(shape), 1)
    with pytest.raises(ValueError, match="`g`"):
        topk_stochastic_sign(tf.zeros(shape), 1, seed=SEED)


# ----------------------------------------------------------------------------------------- rng

N = 1 << 20


def test_uniform_range_moments_and_histogram():
    u = rng.uniform([N], SEED).numpy().astype(np.float64)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / N)
    assert abs(u.var() - 1 / 12) < 5 * np.sqrt(1 / 180 / N)  # Var of (u - 1/2)^2 is 1/180
    counts = np.bincount((u * 256).astype(int), minlength=256)
    chi2 = ((counts - N / 256) ** 2 / (N / 256)).sum()
    assert chi2 < 255 + 6 * np.sqrt(2 * 255)  # chi-square(255): mean 255, sd sqrt(510)


def _pair_chi2(a, b, bins=32):
    counts = np.histogram2d(a, b, bins=bins, range=[[0, 1], [0, 1]])[0]
    expected = a.size / bins**2
    return ((counts - expected) ** 2 / expected).sum(), bins**2 - 1


@pytest.mark.parametrize("lag", [1, 2, 784])
def test_uniform_neighbouring_positions_are_independent(lag):
    u = rng.uniform([N + lag], SEED).numpy().astype(np.float64)
    a, b = u[:-lag], u[lag:]
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(N)
    chi2, dof = _pair_chi2(a, b)
    assert chi2 < dof + 6 * np.sqrt(2 * dof)


@pytest.mark.parametrize("other", [[8, 11], [7, 12], [7 + 2**32, 11]])
def test_uniform_seeds_give_independent_streams(other):
    a = rng.uniform([N], SEED).numpy().astype(np.float64)
    b = rng.uniform([N], tf.constant(other, tf.int64)).numpy().astype(np.float64)
    if other[0] == 7 + 2**32:  # seeds are taken modulo 2^32
        np.testing.assert_array_equal(a, b)
        return
    assert np.mean(a == b) < 1e-3
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(N)
    chi2, dof = _pair_chi2(a, b)
    assert chi2 < dof + 6 * np.sqrt(2 * dof)


def test_uniform_streams_differ_and_shape_is_kept():
    a = rng.uniform([64, 128], SEED, stream=0).numpy()
    b = rng.uniform([64, 128], SEED, stream=1).numpy()
    assert a.shape == (64, 128) and np.mean(a == b) < 0.01
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / np.sqrt(a.size)


def test_uniform_is_bit_identical_under_xla():
    fn = tf.function(lambda s: rng.uniform([300, 777], s), jit_compile=True)
    for seed in ([0, 0], [5, -9], [2**31 - 1, 3]):
        s = tf.constant(seed)
        np.testing.assert_array_equal(fn(s).numpy(), rng.uniform([300, 777], s).numpy())


def test_normal_moments():
    z = rng.normal([N], SEED, stddev=2.5).numpy().astype(np.float64)
    assert abs(z.mean()) < 5 * 2.5 / np.sqrt(N)
    assert abs(z.std() - 2.5) < 5 * 2.5 / np.sqrt(2 * N)
    assert abs(np.mean(np.abs(z) < 2.5) - 0.6827) < 5 * np.sqrt(0.6827 * 0.3173 / N)
    fn = tf.function(lambda s: rng.normal([1000], s, stddev=2.5), jit_compile=True)
    np.testing.assert_allclose(fn(SEED).numpy(), z[:1000], rtol=1e-5, atol=1e-5)
