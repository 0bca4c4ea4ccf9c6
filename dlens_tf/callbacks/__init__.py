"""Keras callbacks."""

from dlens_tf.callbacks.privacy_budget import BudgetExhaustedError, PrivacyBudget
from dlens_tf.callbacks.progress import BudgetProgress

__all__ = ["BudgetExhaustedError", "BudgetProgress", "PrivacyBudget"]
