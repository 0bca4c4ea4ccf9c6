"""CelebA (aligned faces) from a directory the user provides; not downloadable here.

The directory (argument `data_dir`, else the environment variable
`DLENS_CELEBA_DIR`) holds `img_align_celeba/*.jpg` and `list_attr_celeba.txt`,
optionally `list_eval_partition.txt` (official split: 0, 1 -> train, 2 -> test).
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.model_selection import train_test_split

from dlens_tf.data.errors import DatasetError, DatasetNotFoundError

ENV_VAR = "DLENS_CELEBA_DIR"
IMAGE_SIZE = 64
HAIR_COLOURS = ("Black_Hair", "Blond_Hair", "Brown_Hair")
TASKS = ("gender", "hair")
_FALLBACK_TEST_FRACTION = 0.1
_SPLIT_SEED = 0


def _labels(attr_path, task):
    """Returns (file names, int64 labels) for `task` from list_attr_celeba.txt."""
    lines = [line.split() for line in attr_path.read_text().splitlines() if line.strip()]
    header, rows = (lines[1], lines[2:]) if len(lines) > 2 else ([], [])
    try:
        if not rows or any(len(row) != len(header) + 1 for row in rows):
            raise ValueError("ragged or empty table")
        values = np.array([row[1:] for row in rows], dtype=np.int64) > 0
    except ValueError as e:
        raise DatasetError(f"{attr_path} is malformed ({e}): expected a count line, the attribute "
                           "names, then per image its file name and one +-1 value per attribute.") from e
    names = np.array([row[0] for row in rows])
    columns = {name: values[:, i] for i, name in enumerate(header)}
    required = ("Male",) if task == "gender" else HAIR_COLOURS
    missing = [name for name in required if name not in columns]
    if missing:
        raise DatasetError(f"{attr_path} lacks the attributes {missing}.")
    if task == "gender":
        return names, columns["Male"].astype(np.int64)
    hair = np.stack([columns[name] for name in HAIR_COLOURS], axis=1)
    keep = hair.sum(axis=1) == 1  # exactly one of black, blond, brown
    return names[keep], np.argmax(hair[keep], axis=1).astype(np.int64)


def _read_image(path):
    """Centre-crops an image to a square and resizes it to IMAGE_SIZE (uint8 RGB)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except FileNotFoundError as e:
        raise DatasetNotFoundError(f"CelebA image not found: {path}.") from e
    except (UnidentifiedImageError, OSError) as e:
        raise DatasetError(f"CelebA image {path} is corrupt: {e}") from e
    w, h = image.size
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return np.asarray(image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR, box=box), dtype=np.uint8)


def load_celeba(task, data_dir=None):
    """Loads CelebA faces as uint8 [n, 64, 64, 3] with gender or hair-colour labels.

    Args:
      task: "gender" (label 1 = male, 0 = female) or "hair" (0 black, 1 blond,
        2 brown; only faces with exactly one of the three).
      data_dir: the CelebA directory; defaults to `$DLENS_CELEBA_DIR`.

    Returns:
      `(x_train, y_train), (x_test, y_test)`, y int64. The official partition when
      `list_eval_partition.txt` is present, else a fixed stratified 90/10 split.

    Raises:
      DatasetNotFoundError: no directory given, or a file in it is absent.
      DatasetError: a file is malformed.
    """
    if task not in TASKS:
        raise ValueError(f"Received an invalid value for `task`, expected one of {TASKS}. Received: task={task!r}")
    data_dir = data_dir if data_dir is not None else os.environ.get(ENV_VAR)
    layout = "a directory holding img_align_celeba/ and list_attr_celeba.txt (CelebA is not downloadable here)"
    if not data_dir:
        raise DatasetNotFoundError(f"CelebA needs {layout}: pass `data_dir` or set {ENV_VAR}.")
    data_dir = Path(data_dir)
    attr_path = data_dir / "list_attr_celeba.txt"
    if not attr_path.is_file() or not (data_dir / "img_align_celeba").is_dir():
        raise DatasetNotFoundError(f"{data_dir} is not {layout}.")
    names, y = _labels(attr_path, task)
    if not len(names):
        raise DatasetError(f"{attr_path} lists no image for the {task} task.")
    with ThreadPoolExecutor() as pool:
        x = np.stack(list(pool.map(_read_image, [data_dir / "img_align_celeba" / n for n in names])))
    partition_path = data_dir / "list_eval_partition.txt"
    if partition_path.is_file():
        partition = dict(line.split()[:2] for line in partition_path.read_text().splitlines() if line.strip())
        split = [partition.get(n) for n in names]
        if None in split:
            raise DatasetError(f"{partition_path} lacks {names[split.index(None)]}.")
        test = np.array(split) == "2"
        return (x[~test], y[~test]), (x[test], y[test])
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=_FALLBACK_TEST_FRACTION, stratify=y, random_state=_SPLIT_SEED
    )
    return (x_train, y_train), (x_test, y_test)
