"""Keras callbacks."""

from dlens_tf.callbacks.privacy_budget import BudgetExhaustedError, PrivacyBudget

__all__ = ["BudgetExhaustedError", "PrivacyBudget"]
