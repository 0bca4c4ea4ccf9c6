"""DP mechanisms and accounting. Every tensorflow_privacy / dp_accounting touch point lives here."""

from dlens_tf.privacy import mechanisms
from dlens_tf.privacy.accountant import PrivacyAccountant, gaussian_epsilon
from dlens_tf.privacy.calibration import calibrate_noise_multiplier, compute_epsilon
from dlens_tf.privacy.dp_query import TopAggQuery
from dlens_tf.privacy.noise_schedule import GeometricNoiseSchedule, longest_geometric_schedule
from dlens_tf.privacy.sampling import private_batches
from dlens_tf.privacy.topagg import TopAgg, topagg_dp_event, topagg_noise_multiplier

__all__ = [
    "GeometricNoiseSchedule", "PrivacyAccountant", "TopAgg", "TopAggQuery", "calibrate_noise_multiplier",
    "compute_epsilon", "gaussian_epsilon", "longest_geometric_schedule", "mechanisms", "private_batches",
    "topagg_dp_event", "topagg_noise_multiplier",
]
