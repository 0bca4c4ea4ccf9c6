"""Accounting against closed forms and against dp_accounting directly."""

import math

import dp_accounting
import numpy as np
import pytest
from dp_accounting import pld, rdp

from dlens_tf import PrivacyAccountant
from dlens_tf.privacy import gaussian_epsilon, topagg_dp_event


@pytest.mark.parametrize("k, sigma, queries", [(200, 5000.0, 1300), (300, 800.0, 50), (10, 30.0, 7)])
def test_rdp_of_topagg_queries_is_the_closed_form(k, sigma, queries):
    orders, values = PrivacyAccountant("rdp").compose(topagg_dp_event(k, sigma, 1), queries).rdp()
    np.testing.assert_allclose(values, queries * orders * 2 * k / sigma**2, rtol=1e-12)


def test_exact_gaussian_epsilon_matches_the_analytic_formula():
    # delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) at the returned eps equals the target delta.
    from scipy.stats import norm

    for mu in (0.1, 0.5, 1.0, 3.0):
        eps = gaussian_epsilon(mu, 1e-5)
        delta = norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2)
        assert delta == pytest.approx(1e-5, rel=1e-6)


def test_reference_record_query_counts_at_eps_one():
    """REFERENCE.md: sigma=5000, k=200, delta=1e-5, eps=1 allows 1909 (RDP) and 2245 (exact) queries."""
    event = topagg_dp_event(200, 5000.0, 1)
    assert PrivacyAccountant("rdp").max_compositions(event, 1.0, 1e-5) == 1909
    assert PrivacyAccountant("pld").max_compositions(event, 1.0, 1e-5) == 2245


@pytest.mark.parametrize(
    "event",
    [
        topagg_dp_event(200, 5000.0, 1500),
        dp_accounting.SelfComposedDpEvent(dp_accounting.PoissonSampledDpEvent(0.01, dp_accounting.GaussianDpEvent(1.1)), 500),
        dp_accounting.ComposedDpEvent(
            [topagg_dp_event(20, 200.0, 30), dp_accounting.PoissonSampledDpEvent(0.02, dp_accounting.GaussianDpEvent(2.0))]
        ),
    ],
)
def test_tight_is_never_looser_than_rdp_and_both_match_dp_accounting(event):
    delta = 1e-5
    ours_rdp = PrivacyAccountant("rdp").compose(event).get_epsilon(delta)
    ours_pld = PrivacyAccountant("pld").compose(event).get_epsilon(delta)
    ref_rdp = rdp.RdpAccountant()
    ref_rdp.compose(event)
    ref_pld = pld.PLDAccountant(value_discretization_interval=1e-4)
    ref_pld.compose(event)
    assert ours_rdp == pytest.approx(ref_rdp.get_epsilon(delta), rel=1e-9)
    assert ours_pld <= ours_rdp
    # dp_accounting's PLD is pessimistic by its discretisation; ours is exact for the Gaussian part.
    assert ours_pld == pytest.approx(ref_pld.get_epsilon(delta), rel=2e-2)
    assert ours_pld <= ref_pld.get_epsilon(delta) + 1e-9


def test_count_is_composition():
    event = dp_accounting.GaussianDpEvent(3.0)
    for kind in ("rdp", "pld"):
        a = PrivacyAccountant(kind).compose(event, 5).get_epsilon(1e-6)
        b = PrivacyAccountant(kind)
        for _ in range(5):
            b.compose(event)
        assert a == pytest.approx(b.get_epsilon(1e-6), rel=1e-9)


def test_max_compositions_is_the_boundary():
    event = topagg_dp_event(50, 400.0, 1)
    for kind in ("rdp", "pld"):
        acc = PrivacyAccountant(kind).compose(event, 10)
        n = acc.max_compositions(event, 2.0, 1e-5)
        assert acc.copy().compose(event, n).get_epsilon(1e-5) <= 2.0
        assert acc.copy().compose(event, n + 1).get_epsilon(1e-5) > 2.0


@pytest.mark.parametrize("delta", [0, 1, -0.1, 1.5, float("nan")])
def test_bad_delta(delta):
    with pytest.raises(ValueError, match="`delta`"):
        PrivacyAccountant().get_epsilon(delta)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`accountant`"):
        PrivacyAccountant("moments")
    with pytest.raises(ValueError, match="`event`"):
        PrivacyAccountant().compose(1.0)
    with pytest.raises(ValueError, match="`count`"):
        PrivacyAccountant().compose(dp_accounting.GaussianDpEvent(1.0), -1)
    with pytest.raises(ValueError, match="`epsilon`"):
        PrivacyAccountant().max_compositions(dp_accounting.GaussianDpEvent(1.0), 0.0, 1e-5)
