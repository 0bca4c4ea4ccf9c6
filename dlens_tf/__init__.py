"""dlens_tf: differentially private learning through gradient compression and aggregation."""

from dlens_tf.callbacks import PrivacyBudget
from dlens_tf.privacy import PrivacyAccountant, TopAgg, TopAggQuery

__version__ = "0.1.0"
__all__ = ["PrivacyAccountant", "PrivacyBudget", "TopAgg", "TopAggQuery"]
