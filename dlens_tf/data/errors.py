"""Errors raised by the dataset loaders."""

from pathlib import Path


class DatasetError(ValueError):
    """A dataset file is corrupt, has the wrong hash or an unexpected layout."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A dataset file is absent; the message names the command that installs it."""


def read_bytes(path, install):
    """Returns the bytes of the dataset file `path`.

    Args:
      path: the file to read.
      install: how to install the file, quoted in the error message when it is absent.

    Raises:
      DatasetNotFoundError: `path` is not a readable file.
    """
    path = Path(path)
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        raise DatasetNotFoundError(
            f"Dataset file not found: {path}. Install it with `{install}` "
            "(or run `bash scripts/bootstrap.sh`)."
        ) from e
