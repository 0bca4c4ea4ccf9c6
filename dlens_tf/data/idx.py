"""Parser for the IDX format of (Fashion-)MNIST: a big-endian header, then raw bytes."""

import gzip
import zlib

import numpy as np

from dlens_tf.data.errors import DatasetError

_UBYTE = 0x08


def parse_idx(raw, shape, source="IDX data"):
    """Decodes gzip-compressed IDX unsigned-byte data and checks its shape.

    The header is two zero bytes, the type code (0x08: unsigned byte), the number
    of dimensions, then one big-endian uint32 per dimension.

    Args:
      raw: the gzip-compressed file contents (bytes).
      shape: the expected array shape, e.g. (60000, 28, 28).
      source: a name for the data (usually its path), quoted in errors.

    Returns:
      A uint8 array of `shape`.

    Raises:
      DatasetError: the data is not gzip, is truncated, or its header or size
        does not match `shape`.
    """
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{source} is corrupt or truncated: {e}") from e
    ndim = len(shape)
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DatasetError(f"{source} is truncated: {len(data)} bytes, shorter than its header.")
    expected_magic = bytes([0, 0, _UBYTE, ndim])
    if data[:4] != expected_magic:
        raise DatasetError(
            f"{source} has magic number 0x{data[:4].hex()}, expected 0x{expected_magic.hex()} "
            f"(unsigned bytes, {ndim} dimensions)."
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    if dims != tuple(shape):
        raise DatasetError(f"{source} has shape {dims}, expected {tuple(shape)}.")
    size = int(np.prod(shape))
    if len(data) != header_size + size:
        raise DatasetError(
            f"{source} holds {len(data) - header_size} data bytes, expected {size} "
            "(truncated or padded file)."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)
