"""DP mechanisms and accounting. Every tensorflow_privacy / dp_accounting touch point lives here."""

from dlens_tf.privacy.accountant import PrivacyAccountant, gaussian_epsilon
from dlens_tf.privacy.dp_query import TopAggQuery
from dlens_tf.privacy.topagg import TopAgg, topagg_dp_event, topagg_noise_multiplier

__all__ = ["PrivacyAccountant", "TopAgg", "TopAggQuery", "gaussian_epsilon", "topagg_dp_event", "topagg_noise_multiplier"]
