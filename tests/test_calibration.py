"""Accounting of DP-SGD against tensorflow_privacy's own statement, and calibration to a target epsilon."""

import re

import pytest
from tensorflow_privacy import compute_dp_sgd_privacy_statement

from dlens_tf.privacy import PrivacyAccountant
from dlens_tf.privacy.calibration import calibrate_noise_multiplier, compute_epsilon, dpsgd_dp_event
from dlens_tf.privacy.mechanisms import GaussianMechanism


def tf_privacy_poisson_epsilon(n, batch, epochs, z, delta):
    """'Epsilon assuming Poisson sampling' of TF Privacy's statement, with used_microbatching=False:
    one example per microbatch, i.e. per-example clipping with add/remove sensitivity C as we do.
    (Its default, used_microbatching=True, halves z for microbatches of several examples.)"""
    text = compute_dp_sgd_privacy_statement(n, batch, epochs, z, delta, used_microbatching=False)
    return float(re.search(r"Epsilon assuming Poisson sampling \(\*\):\s+([0-9.]+)", text).group(1))


@pytest.mark.parametrize("n,batch,epochs,z", [(60000, 250, 2, 1.1), (60000, 256, 5, 0.8), (10000, 100, 3, 2.0), (50000, 500, 10, 1.5)])
def test_gaussian_epsilon_equals_tensorflow_privacy(n, batch, epochs, z):
    delta = 1e-5
    steps_per_epoch = -(-n // batch)
    if n % batch == 0:  # TF Privacy counts ceil(epochs * n / batch) steps; we count ceil(n / batch) per epoch
        event = GaussianMechanism(l2_norm_clip=1.0, noise_multiplier=z).dp_event(batch / n)
        ours = PrivacyAccountant("rdp").compose(event, steps_per_epoch * epochs).get_epsilon(delta)
        assert ours == pytest.approx(compute_epsilon(z, batch, n, epochs, delta), rel=1e-12)
    else:
        ours = PrivacyAccountant("rdp").compose(dpsgd_dp_event(z, batch, n, epochs)).get_epsilon(delta)
        ours_exact_steps = PrivacyAccountant("rdp").compose(
            GaussianMechanism(1.0, z).dp_event(batch / n), -(-epochs * n // batch)).get_epsilon(delta)
        assert ours >= ours_exact_steps  # the extra rounding-up step only costs more
        ours = ours_exact_steps
    assert ours == pytest.approx(tf_privacy_poisson_epsilon(n, batch, epochs, z, delta), abs=6e-4)


@pytest.mark.parametrize("target", [0.5, 1.0, 2.0, 5.0, 10.0])
def test_calibration_lands_within_one_percent_below_target(target, accountant="rdp", epochs=3):
    z = calibrate_noise_multiplier(target, 1e-5, epochs=epochs, batch_size=1000, num_examples=60000, accountant=accountant)
    eps = compute_epsilon(z, 1000, 60000, epochs, 1e-5, accountant=accountant)
    assert 0.99 * target <= eps <= target
    assert compute_epsilon(z * 0.98, 1000, 60000, epochs, 1e-5, accountant=accountant) > eps  # less noise, more epsilon


def test_calibration_matches_tensorflow_privacy_independently():
    z = calibrate_noise_multiplier(2.0, 1e-5, epochs=4, batch_size=250, num_examples=60000)
    assert 1.98 - 1e-3 <= tf_privacy_poisson_epsilon(60000, 250, 4, z, 1e-5) <= 2.0 + 1e-3


def test_shuffle_accounting_is_fixed_batch_replace_one_without_amplification():
    z = calibrate_noise_multiplier(8.0, 1e-5, epochs=1, batch_size=1000, num_examples=10000, sampling="shuffle")
    direct = PrivacyAccountant("rdp").compose(GaussianMechanism(1.0, z).dp_event(None), 10).get_epsilon(1e-5)
    assert 0.99 * 8.0 <= direct <= 8.0
    assert z > calibrate_noise_multiplier(8.0, 1e-5, epochs=1, batch_size=1000, num_examples=10000)


@pytest.mark.parametrize("kwargs,argument", [
    ({"target_epsilon": 0.0}, "epsilon"),
    ({"target_epsilon": -1.0}, "epsilon"),
    ({"delta": 0.0}, "delta"),
    ({"delta": 1.0}, "delta"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 70000}, "batch_size"),
    ({"num_examples": 0}, "num_examples"),
    ({"accountant": "moments"}, "accountant"),
    ({"sampling": "uniform"}, "sampling"),
    ({"tolerance": 0.0}, "tolerance"),
])
def test_bad_calibration_arguments(kwargs, argument):
    args = dict(target_epsilon=1.0, delta=1e-5, epochs=1, batch_size=256, num_examples=60000)
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"`{argument}`"):
        calibrate_noise_multiplier(**args)
