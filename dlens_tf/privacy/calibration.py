"""Noise calibration from a target budget (Opacus' make_private_with_epsilon, for DP-SGD)."""

import dp_accounting

from dlens_tf.privacy.accountant import PrivacyAccountant, validate_delta, validate_epsilon
from dlens_tf.privacy.sampling import steps_per_epoch, validate_sampling


def dpsgd_dp_event(noise_multiplier, batch_size, num_examples, epochs, sampling="poisson"):
    """The event of `epochs` epochs of DP-SGD with noise multiplier z (noise stddev / add-remove sensitivity).

    poisson: ceil(n / B) * epochs compositions of PoissonSampledDpEvent(B / n, Gaussian(z)).
    shuffle: as many compositions of Gaussian(z / 2) (replace-one, no amplification claimed).
    This is what `DPModel.dp_event_per_step()` composed over that many steps reports, for every
    mechanism (they all define z against their own sensitivity).
    """
    validate_sampling(sampling)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0:
        raise ValueError(f"Received an invalid value for `epochs`, expected a positive integer. Received: epochs={epochs!r}")
    steps = steps_per_epoch(batch_size, num_examples) * epochs
    if sampling == "poisson":
        step = dp_accounting.PoissonSampledDpEvent(batch_size / num_examples, dp_accounting.GaussianDpEvent(noise_multiplier))
    else:
        step = dp_accounting.GaussianDpEvent(noise_multiplier / 2.0)
    return dp_accounting.SelfComposedDpEvent(step, steps)


def compute_epsilon(noise_multiplier, batch_size, num_examples, epochs, delta, sampling="poisson", accountant="rdp"):
    """Epsilon at `delta` after `epochs` epochs of DP-SGD (see `dpsgd_dp_event`)."""
    event = dpsgd_dp_event(noise_multiplier, batch_size, num_examples, epochs, sampling)
    return PrivacyAccountant(accountant).compose(event).get_epsilon(delta)


def calibrate_noise_multiplier(
    target_epsilon, delta, epochs, batch_size, num_examples, accountant="rdp", sampling="poisson", tolerance=0.01
):
    """The noise multiplier z whose DP-SGD run spends epsilon in [(1 - tolerance) * target, target].

    Bisection on z (epsilon decreases in z) with dp_accounting through `PrivacyAccountant`.

    Args:
      target_epsilon: epsilon to spend (> 0); delta: in (0, 1).
      epochs, batch_size, num_examples: the run (ceil(num_examples / batch_size) steps per epoch).
      accountant: "rdp" or "pld".
      sampling: "poisson" or "shuffle", as in `DPModel`.
      tolerance: relative slack below the target, in (0, 1).

    Returns:
      z (float) such that compute_epsilon(z, ...) <= target_epsilon.
    """
    validate_epsilon(target_epsilon)
    validate_delta(delta)
    if not 0 < tolerance < 1:
        raise ValueError(f"Received an invalid value for `tolerance`, expected a number in (0, 1). Received: tolerance={tolerance!r}")

    def epsilon(z):
        return compute_epsilon(z, batch_size, num_examples, epochs, delta, sampling, accountant)

    lo, hi = 0.0, 1.0
    while epsilon(hi) > target_epsilon:
        lo, hi = hi, hi * 2.0
        if hi > 1e6:
            raise ValueError(f"No noise multiplier up to 1e6 reaches target_epsilon={target_epsilon} at delta={delta}.")
    for _ in range(100):
        eps = epsilon(hi)
        if eps >= (1.0 - tolerance) * target_epsilon:
            return hi
        mid = (lo + hi) / 2.0
        if epsilon(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi
