"""GeometricNoiseSchedule: its values, its exact cost, the longest ramp a budget allows, and bad input."""

import math

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf

from dlens_tf.privacy import (GeometricNoiseSchedule, PrivacyAccountant, TopAgg, gaussian_epsilon,
                              longest_geometric_schedule, topagg_dp_event, topagg_noise_multiplier)
from dlens_tf.privacy.accountant import repeated_event


def test_values_follow_the_geometric_ramp_then_stay_at_the_end():
    schedule = GeometricNoiseSchedule(8.0, 2.0, 5)
    expected = np.float32([8.0, 8.0 * 0.25 ** 0.25, 4.0, 8.0 * 0.25 ** 0.75, 2.0, 2.0, 2.0]).astype(np.float64)
    np.testing.assert_array_equal(schedule.values(7), expected)
    assert [float(schedule(tf.constant(t))) for t in range(7)] == list(expected)
    assert float(schedule(tf.Variable(10**6, dtype=tf.int64))) == 2.0
    np.testing.assert_array_equal(GeometricNoiseSchedule(8.0, 3.0, 1).values(3), [3.0, 3.0, 3.0])
    assert schedule.values(0).shape == (0,)
    assert schedule.scaled(0.5) == GeometricNoiseSchedule(4.0, 1.0, 5)
    assert GeometricNoiseSchedule.from_config(schedule.get_config()) == schedule


@pytest.mark.parametrize("args", [(0.0, 1.0, 3), (-1.0, 1.0, 3), (1.0, math.nan, 3), (1.0, math.inf, 3),
                                  (True, 1.0, 3), ("2", 1.0, 3), (1.0, 2.0, 0), (1.0, 2.0, 2.5), (1.0, 2.0, True)])
def test_bad_schedules_raise_clear_errors(args):
    with pytest.raises(ValueError, match="Received an invalid value for `(start|end|steps)`"):
        GeometricNoiseSchedule(*args)


def test_a_schedule_costs_one_gaussian_of_the_summed_precision():
    """Closed forms: Gaussian mechanisms compose into one of precision sum_t 1 / z_t^2 (exact under PLD, and
    additive in RDP), z_t = sigma_t / (2 sqrt(k)) per record, `m` records per step."""
    k, m, delta = 8, 12, 1e-5
    schedule = GeometricNoiseSchedule(60.0, 25.0, 6)
    event = schedule.dp_event(9, lambda sigma: topagg_dp_event(k, sigma, m))
    sigmas = schedule.values(9)
    precision = m * sum(topagg_noise_multiplier(k, s) ** -2 for s in sigmas)
    pld = PrivacyAccountant("pld").compose(event).get_epsilon(delta)
    assert pld == pytest.approx(gaussian_epsilon(math.sqrt(precision), delta), rel=1e-9)
    single = dp_accounting.GaussianDpEvent(precision ** -0.5)
    rdp = PrivacyAccountant("rdp").compose(event).get_epsilon(delta)
    assert rdp == pytest.approx(PrivacyAccountant("rdp").compose(single).get_epsilon(delta), rel=1e-9)
    # More noise somewhere, never less: the cost only falls.
    assert PrivacyAccountant("pld").compose(schedule.scaled(1.01).dp_event(9, lambda s: topagg_dp_event(k, s, m))
                                            ).get_epsilon(delta) < pld


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_the_longest_ramp_is_the_budget_boundary(accountant):
    def event_of_sigma(sigma):
        return topagg_dp_event(200, sigma, 15)

    def epsilon(schedule, steps):
        return PrivacyAccountant(accountant).compose(schedule.dp_event(steps, event_of_sigma)).get_epsilon(1e-5)

    schedule = longest_geometric_schedule(11000.0, 4500.0, event_of_sigma, 1.0, 1e-5, accountant)
    assert schedule.start == 11000.0 and schedule.end == 4500.0
    assert epsilon(schedule, schedule.steps) <= 1.0
    assert epsilon(GeometricNoiseSchedule(11000.0, 4500.0, schedule.steps + 1), schedule.steps + 1) > 1.0
    constant = longest_geometric_schedule(7000.0, 7000.0, event_of_sigma, 1.0, 1e-5, accountant)
    assert constant.steps == PrivacyAccountant(accountant).max_compositions(event_of_sigma(7000.0), 1.0, 1e-5)
    with pytest.raises(ValueError, match="one step fits the budget"):
        longest_geometric_schedule(11000.0, 10.0, event_of_sigma, 1.0, 1e-5, accountant)


def test_max_steps_never_returns_a_count_that_does_not_fit():
    acc = PrivacyAccountant("pld")
    event = dp_accounting.GaussianDpEvent(20.0)
    n = acc.max_compositions(event, 1.0, 1e-5)
    assert n > 6
    for limit in (3, n - 1, n, n + 1, 2 * n):  # the doubling passes the limit before, at and after the boundary
        got = acc.max_steps(lambda steps: repeated_event(event, steps), 1.0, 1e-5, limit=limit)
        assert got == min(limit, n)
    with pytest.raises(ValueError, match="event"):
        acc.max_compositions("gaussian", 1.0, 1e-5)
    with pytest.raises(ValueError, match="event_of_steps"):
        acc.max_steps(event, 1.0, 1e-5)


def test_topagg_sigma_argument_scales_the_same_noise_draw():
    """aggregate(g, sigma) adds sigma times the draw it adds at sigma 1: the noise is what is charged."""
    g = tf.constant(np.random.default_rng(0).standard_normal((6, 4, 50)).astype(np.float32))
    _, one = TopAgg(5, 99.0, 0.0, seed=3).aggregate(g, 1.0)
    _, three = TopAgg(5, 99.0, 0.0, seed=3).aggregate(g, tf.constant(3.0))
    noise = (three.numpy() - one.numpy()) / 2.0
    clean = one.numpy() - noise
    np.testing.assert_allclose(clean, np.round(clean), atol=1e-4)  # sums of +-1 votes
    assert np.abs(clean).max() <= 6
    assert 0.85 < noise.std() < 1.15 and abs(noise.mean()) < 0.15  # 200 draws of N(0, 1)
    _, default = TopAgg(5, 3.0, 0.0, seed=3).aggregate(g)
    np.testing.assert_allclose(default.numpy(), three.numpy(), rtol=1e-6)
    for bad in (0.0, -1.0, math.nan, math.inf):  # no noise, or none that is charged: refused
        with pytest.raises(ValueError, match="sigma"):
            TopAgg(5, 3.0, 0.0, seed=3).aggregate(g, bad)
