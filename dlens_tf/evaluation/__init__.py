"""Utility of synthetic data (train on synthetic, test on real), an own-label filter, sample grids and plots."""

from dlens_tf.evaluation.filtering import filter_by_own_label, keep_best_per_class, own_label_scores
from dlens_tf.evaluation.grid import image_grid, save_image_grid
from dlens_tf.evaluation.plots import read_history, save_training_plot
from dlens_tf.evaluation.utility import (
    FAST_PROTOCOL,
    PAPER_PROTOCOL,
    UtilityResult,
    evaluate_synthetic,
    utility_classifier,
)

__all__ = [
    "FAST_PROTOCOL",
    "PAPER_PROTOCOL",
    "UtilityResult",
    "evaluate_synthetic",
    "filter_by_own_label",
    "image_grid",
    "keep_best_per_class",
    "own_label_scores",
    "read_history",
    "save_image_grid",
    "save_training_plot",
    "utility_classifier",
]
