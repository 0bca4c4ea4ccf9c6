"""scikit-learn's bundled 8x8 digits (1797 images), split 1497 train / 300 test."""

import numpy as np
from sklearn.datasets import load_digits as _sklearn_digits
from sklearn.model_selection import train_test_split

TEST_SIZE = 300
SPLIT_SEED = 0


def load_digits():
    """Loads the 8x8 digits, pixels 0..16 scaled to uint8 0..255 (round(v * 255 / 16)).

    The split is stratified by class and fixed (seed 0): 1497 train, 300 test.

    Returns:
      `(x_train, y_train), (x_test, y_test)`: x uint8 [n, 8, 8, 1], y int64 [n].
    """
    digits = _sklearn_digits()
    x = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED
    )
    return (x_train, y_train), (x_test, y_test)
