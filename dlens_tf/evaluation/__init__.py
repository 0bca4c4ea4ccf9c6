"""Utility of synthetic data (train on synthetic, test on real) and sample grids."""

from dlens_tf.evaluation.grid import image_grid, save_image_grid
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
    "save_image_grid",
    "utility_classifier",
]
