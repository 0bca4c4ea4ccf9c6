"""Offline datasets (MNIST, Fashion-MNIST, digits, CelebA from disk), teacher shards, pixel scaling."""

from dlens_tf.data.errors import DatasetError, DatasetNotFoundError
from dlens_tf.data.partition import partition
from dlens_tf.data.registry import NAMES, load
from dlens_tf.data.scaling import to_float, to_uint8

__all__ = ["DatasetError", "DatasetNotFoundError", "NAMES", "load", "partition", "to_float", "to_uint8"]
