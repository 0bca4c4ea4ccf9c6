"""Utility of synthetic data (train on synthetic, test on real), sample grids and training plots."""

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
    "image_grid",
    "read_history",
    "save_image_grid",
    "save_training_plot",
    "utility_classifier",
]
