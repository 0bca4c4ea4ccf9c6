"""Fashion-MNIST from the Debian package `dataset-fashion-mnist` (IDX files)."""

from pathlib import Path

import numpy as np

from dlens_tf.data.errors import read_bytes
from dlens_tf.data.idx import parse_idx

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
INSTALL = "apt-get install dataset-fashion-mnist"
_SIZES = {"train": 60000, "t10k": 10000}


def load_fashion_mnist(data_dir=None):
    """Loads Fashion-MNIST: 60000 train and 10000 test 28x28 grey images, 10 classes.

    Args:
      data_dir: directory holding `{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`;
        defaults to the Debian package's /usr/share/datasets/fashion-mnist.

    Returns:
      `(x_train, y_train), (x_test, y_test)`: x uint8 [n, 28, 28, 1], y int64 [n].

    Raises:
      DatasetNotFoundError: a file is absent.
      DatasetError: a file is corrupt or truncated.
    """
    data_dir = Path(data_dir) if data_dir is not None else DEFAULT_DIR
    splits = []
    for split, n in _SIZES.items():
        images_path = data_dir / f"{split}-images-idx3-ubyte.gz"
        labels_path = data_dir / f"{split}-labels-idx1-ubyte.gz"
        x = parse_idx(read_bytes(images_path, INSTALL), (n, 28, 28), str(images_path))
        y = parse_idx(read_bytes(labels_path, INSTALL), (n,), str(labels_path))
        splits.append((x[..., None], y.astype(np.int64)))
    return tuple(splits)
