"""Privacy accounting over dp_accounting events: RDP (TF Privacy's backend) or tight.

`PrivacyAccountant("rdp")` is dp_accounting's RdpAccountant, the one tensorflow_privacy
uses. `PrivacyAccountant("pld")` is the tight option: compositions of Gaussian mechanisms
are merged exactly (Q Gaussians with noise multipliers z_i are one Gaussian with
1 / sqrt(sum 1 / z_i^2)) and converted with the analytic Gaussian formula of Balle & Wang
(2018), which is exact; any other event (e.g. Poisson-sampled) goes through dp_accounting's
privacy-loss-distribution accountant together with that merged Gaussian.
"""

import math

import dp_accounting
import numpy as np
from dp_accounting import pld, rdp
from scipy import optimize, special

ACCOUNTANTS = ("rdp", "pld")


def validate_epsilon(epsilon):
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"Received an invalid value for `epsilon`, expected a positive finite number. Received: epsilon={epsilon!r}")


def validate_delta(delta):
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
        raise ValueError(f"Received an invalid value for `delta`, expected a number in (0, 1). Received: delta={delta!r}")


def repeated_event(event, count):
    """`event` composed `count` (>= 0) times, as one dp_accounting event."""
    if count == 0:
        return dp_accounting.NoOpDpEvent()
    return dp_accounting.SelfComposedDpEvent(event, count) if count > 1 else event


def _gaussian_precision(event):
    """sum_i 1/z_i^2 if `event` is a composition of Gaussian mechanisms only, else None."""
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return math.inf if event.noise_multiplier == 0 else event.noise_multiplier**-2
    if isinstance(event, dp_accounting.NoOpDpEvent):
        return 0.0
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        inner = _gaussian_precision(event.event)
        return None if inner is None else inner * event.count
    if isinstance(event, dp_accounting.ComposedDpEvent):
        parts = [_gaussian_precision(e) for e in event.events]
        return None if any(p is None for p in parts) else sum(parts)
    return None


def gaussian_epsilon(mu, delta):
    """Exact epsilon of the Gaussian mechanism with sensitivity/std ratio `mu` (Balle & Wang 2018)."""
    if mu == 0:
        return 0.0
    if math.isinf(mu):
        return math.inf

    def delta_of(eps):  # Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2), in log space for stability
        a = special.log_ndtr(-eps / mu + mu / 2)
        b = eps + special.log_ndtr(-eps / mu - mu / 2)
        return math.exp(a) * -math.expm1(b - a) if b < a else 0.0

    if delta_of(0.0) <= delta:
        return 0.0
    hi = 1.0
    while delta_of(hi) > delta:
        hi *= 2
    return optimize.brentq(lambda e: delta_of(e) - delta, 0.0, hi, xtol=1e-12, rtol=1e-12)


class PrivacyAccountant:
    """Composes dp_accounting events and reports (epsilon, delta).

    Args:
      accountant: "rdp" (dp_accounting's RdpAccountant, as in TF Privacy) or "pld" (tight).
      orders: RDP orders (rdp only); dp_accounting's defaults when None.
      value_discretization_interval: PLD grid for non-Gaussian events (pld only).
    """

    def __init__(self, accountant="rdp", orders=None, value_discretization_interval=1e-4):
        if accountant not in ACCOUNTANTS:
            raise ValueError(
                f"Received an invalid value for `accountant`, expected one of {ACCOUNTANTS}. Received: accountant={accountant!r}"
            )
        self.accountant = accountant
        self.orders = orders
        self.value_discretization_interval = value_discretization_interval
        self._events = []

    def compose(self, event, count=1):
        """Adds `count` repetitions of `event`; returns self."""
        if not isinstance(event, dp_accounting.DpEvent):
            raise ValueError(f"Received an invalid value for `event`, expected a dp_accounting.DpEvent. Received: event={event!r}")
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"Received an invalid value for `count`, expected an integer >= 0. Received: count={count!r}")
        if count:
            self._events.append(repeated_event(event, int(count)))
        return self

    @property
    def ledger(self):
        """Everything composed so far, as one dp_accounting event."""
        return dp_accounting.ComposedDpEvent(list(self._events))

    def copy(self):
        other = PrivacyAccountant(self.accountant, self.orders, self.value_discretization_interval)
        other._events = list(self._events)
        return other

    def rdp(self):
        """(orders, RDP values) of what was composed (rdp accountant)."""
        acc = rdp.RdpAccountant(self.orders)
        acc.compose(self.ledger)
        return np.asarray(acc.orders), np.asarray(acc._rdp)  # pylint: disable=protected-access

    def get_epsilon(self, delta):
        """The smallest epsilon this accountant certifies at `delta`."""
        validate_delta(delta)
        if self.accountant == "rdp":
            acc = rdp.RdpAccountant(self.orders)
            acc.compose(self.ledger)
            return float(acc.get_epsilon(delta))
        gaussian, others = 0.0, []
        for event in self._events:
            precision = _gaussian_precision(event)
            if precision is None:
                others.append(event)
            else:
                gaussian += precision
        if not others:
            return gaussian_epsilon(math.sqrt(gaussian), delta)
        acc = pld.PLDAccountant(value_discretization_interval=self.value_discretization_interval)
        if gaussian:
            acc.compose(dp_accounting.GaussianDpEvent(gaussian**-0.5))
        acc.compose(dp_accounting.ComposedDpEvent(others))
        return float(acc.get_epsilon(delta))

    def max_compositions(self, event, epsilon, delta, limit=10**9):
        """The largest n such that composing `event` n more times keeps epsilon <= `epsilon` at `delta`."""
        if not isinstance(event, dp_accounting.DpEvent):
            raise ValueError(f"Received an invalid value for `event`, expected a dp_accounting.DpEvent. Received: event={event!r}")
        return self.max_steps(lambda n: repeated_event(event, n), epsilon, delta, limit)

    def max_steps(self, event_of_steps, epsilon, delta, limit=10**9):
        """The largest n such that composing `event_of_steps(n)` keeps epsilon <= `epsilon` at `delta`.

        `event_of_steps(n)` is the dp_accounting event of n steps (e.g. of a noise schedule); its cost
        must not fall as n grows. The n returned always fits: the search only accepts n it has checked.
        """
        if not callable(event_of_steps):
            raise ValueError("Received an invalid value for `event_of_steps`, expected a function of the step count "
                             f"returning a dp_accounting.DpEvent. Received: event_of_steps={event_of_steps!r}")
        validate_epsilon(epsilon)
        validate_delta(delta)

        def fits(n):
            return self.copy().compose(event_of_steps(n)).get_epsilon(delta) <= epsilon

        if not fits(0):
            return 0
        lo, hi = 0, 1
        while fits(hi):
            lo, hi = hi, hi * 2
            if hi > limit:
                if fits(limit):
                    return limit
                hi = limit
                break
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo
