"""Image grids of samples, one row per class."""

import os

import numpy as np
from PIL import Image, ImageDraw


def image_grid(x, y, num_classes=10, per_class=10, padding=1):
    """Tiles samples into one row per class: row c holds the first `per_class` images labelled c.

    Cells of classes with fewer samples stay black; cells are separated by `padding` black pixels.

    Args:
      x: images `[n, H, W, C]` (C = 1 or 3), uint8 in [0, 255] or floats in [0, 1].
      y: integer labels `[n]` in [0, num_classes).
      num_classes: number of rows.
      per_class: number of columns.
      padding: pixels between cells (>= 0).

    Returns:
      uint8 array `[num_classes * (H + padding) + padding, per_class * (W + padding) + padding, C]`.
    """
    x, y = np.asarray(x), np.asarray(y)
    for name, value, minimum in (("num_classes", num_classes, 1), ("per_class", per_class, 1), ("padding", padding, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"Received an invalid value for `{name}`, expected an integer >= {minimum}. Received: {name}={value!r}")
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"Received an invalid value for `x`, expected images shaped [n, H, W, 1 or 3]. Received: x.shape={x.shape}")
    if y.shape != (len(x),) or (len(y) and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"Received an invalid value for `y`, expected {len(x)} integer labels. Received: y.shape={y.shape}, dtype={y.dtype}")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"Received an invalid value for `y`, expected labels in [0, {num_classes}). Received: labels in [{y.min()}, {y.max()}]")
    x = _to_uint8(x)
    _, h, w, c = x.shape
    grid = np.zeros((num_classes * (h + padding) + padding, per_class * (w + padding) + padding, c), np.uint8)
    for label in range(num_classes):
        for col, image in enumerate(x[y == label][:per_class]):
            top, left = padding + label * (h + padding), padding + col * (w + padding)
            grid[top : top + h, left : left + w] = image
    return grid


def save_image_grid(path, x, y, num_classes=10, per_class=10, scale=2, labels=True):
    """Writes `image_grid(x, y, num_classes, per_class)` as a PNG, upscaled by `scale`.

    Args:
      path: output file; parent directories are created.
      x, y, num_classes, per_class: as `image_grid`.
      scale: integer upscaling factor (nearest neighbour).
      labels: if True, a left margin names each row's class.

    Returns:
      `path`.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"Received an invalid value for `scale`, expected an integer >= 1. Received: scale={scale!r}")
    grid = image_grid(x, y, num_classes, per_class)
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    image = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if labels:
        margin = 8 * len(str(num_classes - 1)) + 8
        labelled = Image.new(image.mode, (image.width + margin, image.height), color=255 if image.mode == "L" else (255, 255, 255))
        labelled.paste(image, (margin, 0))
        draw = ImageDraw.Draw(labelled)
        row_height = image.height / num_classes
        for label in range(num_classes):
            draw.text((3, int((label + 0.5) * row_height) - 6), str(label), fill=0 if image.mode == "L" else (0, 0, 0))
        image = labelled
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    image.save(path, format="PNG")
    return path


def _to_uint8(x):
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError(f"Received an invalid value for `x`, expected integer pixels in [0, 255]. Received: pixels in [{x.min()}, {x.max()}]")
        return x.astype(np.uint8)
    if x.size and (not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1):
        raise ValueError(f"Received an invalid value for `x`, expected float pixels in [0, 1]. Received: pixels in [{np.nanmin(x)}, {np.nanmax(x)}]")
    return np.round(x * 255.0).astype(np.uint8)
