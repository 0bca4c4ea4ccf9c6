"""Utility of synthetic data: train a classifier on synthetic records only, test it on real ones."""

import dataclasses
import math
import time

import numpy as np
import tensorflow as tf
from tensorflow import keras

# The official DataLens MNIST / Fashion-MNIST evaluation: SGD, lr 2e-3, batch 512, 600 epochs.
PAPER_PROTOCOL = dict(optimizer="sgd", learning_rate=2e-3, batch_size=512, epochs=600)
# A CPU-friendly default: Adam converges in tens of epochs where plain SGD at 2e-3 needs hundreds.
FAST_PROTOCOL = dict(optimizer="adam", learning_rate=1e-3, batch_size=512, epochs=20)

_OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}


def utility_classifier(input_shape, num_classes=10, seed=None):
    """The official DataLens evaluation CNN for MNIST / Fashion-MNIST.

    Conv2D(32, 3x3, relu) -> MaxPool(2) -> Dropout(0.2) -> Conv2D(64, 3x3, relu) -> Dropout(0.25)
    -> Flatten -> Dense(64, relu) -> Dense(num_classes, softmax).

    Args:
      input_shape: `(height, width, channels)`; height and width at least 8.
      num_classes: number of classes (>= 2).
      seed: optional integer making initialisation and dropout reproducible.

    Input shape:
      `[batch, height, width, channels]` floats in [0, 1].
    Output shape:
      `[batch, num_classes]` class probabilities.
    """
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s <= 0 for s in input_shape):
        raise ValueError(
            "Received an invalid value for `input_shape`, expected (height, width, channels) positive integers. "
            f"Received: input_shape={input_shape!r}"
        )
    if min(input_shape[:2]) < 8:
        raise ValueError(
            "Received an invalid value for `input_shape`, expected height and width >= 8 (two 3x3 convolutions "
            f"and a 2x2 pooling). Received: input_shape={input_shape!r}"
        )
    _check_int("num_classes", num_classes, minimum=2)

    def init(offset):
        return keras.initializers.GlorotUniform(seed=None if seed is None else seed + offset)

    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(input_shape),
            layers.Conv2D(32, 3, activation="relu", kernel_initializer=init(0), name="conv_1"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Dropout(0.2, seed=seed, name="dropout_1"),
            layers.Conv2D(64, 3, activation="relu", kernel_initializer=init(1), name="conv_2"),
            layers.Dropout(0.25, seed=None if seed is None else seed + 1, name="dropout_2"),
            layers.Flatten(name="flatten"),
            layers.Dense(64, activation="relu", kernel_initializer=init(2), name="dense"),
            layers.Dense(num_classes, activation="softmax", kernel_initializer=init(3), name="output"),
        ],
        name="utility_classifier",
    )


@dataclasses.dataclass
class UtilityResult:
    """Accuracy on real test data of a classifier trained only on synthetic data, under two protocols.

    Attributes:
      max_test_accuracy: the paper's (optimistic) protocol: the best real-test accuracy over all epochs,
        i.e. the test set picks the epoch.
      max_test_epoch: the 1-based epoch reaching `max_test_accuracy`.
      honest_accuracy: real-test accuracy at the epoch chosen without the test set: the best epoch on a
        held-out split of the SYNTHETIC data, or the final epoch when there is no held-out split.
      honest_epoch: the 1-based epoch reaching `honest_accuracy`.
      honest_selection: "synthetic_holdout" or "final_epoch".
      final_test_accuracy: real-test accuracy after the last epoch.
      history: one dict per epoch: epoch, loss, accuracy (train), holdout_accuracy (or None), test_accuracy.
      config: the protocol (optimizer, learning_rate, batch_size, epochs, holdout_fraction, seed,
        num_train, num_holdout, num_test, wall_seconds).
    """

    max_test_accuracy: float
    max_test_epoch: int
    honest_accuracy: float
    honest_epoch: int
    honest_selection: str
    final_test_accuracy: float
    history: list
    config: dict

    def to_dict(self):
        return dataclasses.asdict(self)


def evaluate_synthetic(
    x_syn,
    y_syn,
    x_test,
    y_test,
    num_classes=10,
    epochs=FAST_PROTOCOL["epochs"],
    batch_size=FAST_PROTOCOL["batch_size"],
    learning_rate=FAST_PROTOCOL["learning_rate"],
    optimizer=FAST_PROTOCOL["optimizer"],
    holdout_fraction=0.1,
    seed=None,
    verbose=0,
):
    """Trains `utility_classifier` on synthetic data only and measures it on the real test set.

    Each epoch the classifier is scored on the real test set and on a held-out `holdout_fraction` of the
    synthetic records (not trained on). Both protocols come from this one run (see `UtilityResult`).
    Defaults are the fast CPU protocol (Adam 1e-3, 20 epochs); `**PAPER_PROTOCOL` gives the official
    one (SGD 2e-3, batch 512, 600 epochs). The paper trains on all synthetic records; with
    `holdout_fraction > 0` the classifier sees (1 - holdout_fraction) of them.

    Args:
      x_syn, y_syn: synthetic images `[n, H, W, C]` (uint8 in [0, 255] or floats in [0, 1]) and integer
        labels `[n]` in [0, num_classes).
      x_test, y_test: real test images and labels, same conventions and image shape.
      num_classes: number of classes.
      epochs, batch_size, learning_rate: training schedule.
      optimizer: "adam" or "sgd" (plain SGD, as the paper).
      holdout_fraction: fraction of the synthetic records held out to choose the honest epoch, in [0, 1);
        0 means the honest figure is the final epoch's.
      seed: optional integer for a reproducible split, initialisation, dropout and shuffling.
      verbose: 0 silent, 1 one line per epoch.

    Returns:
      A `UtilityResult`.
    """
    x_syn, y_syn = _validate_images_labels("x_syn", "y_syn", x_syn, y_syn, num_classes)
    x_test, y_test = _validate_images_labels("x_test", "y_test", x_test, y_test, num_classes)
    if x_syn.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            "Received an invalid value for `x_test`, expected the image shape of `x_syn` "
            f"{x_syn.shape[1:]}. Received: x_test.shape={x_test.shape}"
        )
    _check_int("epochs", epochs, minimum=1)
    _check_int("batch_size", batch_size, minimum=1)
    _check_positive("learning_rate", learning_rate)
    _check_optimizer("optimizer", optimizer)
    if not isinstance(holdout_fraction, (int, float)) or not 0 <= holdout_fraction < 1:
        raise ValueError(
            "Received an invalid value for `holdout_fraction`, expected a number in [0, 1). "
            f"Received: holdout_fraction={holdout_fraction!r}"
        )

    order = np.random.default_rng(seed).permutation(len(x_syn))
    num_holdout = int(round(holdout_fraction * len(x_syn)))
    if holdout_fraction > 0 and not 1 <= num_holdout < len(x_syn):
        raise ValueError(
            f"Received an invalid value for `x_syn`, expected enough records to hold out {holdout_fraction} of them "
            f"and train on the rest. Received: {len(x_syn)} records"
        )
    holdout, train = order[:num_holdout], order[num_holdout:]

    model = utility_classifier(x_syn.shape[1:], num_classes, seed=seed)
    model.compile(
        optimizer=_OPTIMIZERS[optimizer](learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    train_ds = (
        tf.data.Dataset.from_tensor_slices((x_syn[train], y_syn[train]))
        .shuffle(len(train), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    scorer = _EpochScorer(
        test=(x_test, y_test),
        holdout=(x_syn[holdout], y_syn[holdout]) if num_holdout else None,
        verbose=verbose,
        epochs=epochs,
    )
    start = time.time()
    model.fit(train_ds, epochs=epochs, verbose=0, callbacks=[scorer])
    history = scorer.history

    test = [h["test_accuracy"] for h in history]
    best = int(np.argmax(test))
    if num_holdout:
        honest, selection = int(np.argmax([h["holdout_accuracy"] for h in history])), "synthetic_holdout"
    else:
        honest, selection = len(history) - 1, "final_epoch"
    return UtilityResult(
        max_test_accuracy=test[best],
        max_test_epoch=best + 1,
        honest_accuracy=test[honest],
        honest_epoch=honest + 1,
        honest_selection=selection,
        final_test_accuracy=test[-1],
        history=history,
        config=dict(
            optimizer=optimizer,
            learning_rate=float(learning_rate),
            batch_size=batch_size,
            epochs=epochs,
            holdout_fraction=float(holdout_fraction),
            seed=seed,
            num_train=int(len(train)),
            num_holdout=int(num_holdout),
            num_test=int(len(x_test)),
            wall_seconds=round(time.time() - start, 2),
        ),
    )


class _EpochScorer(keras.callbacks.Callback):
    """Scores the model on the real test set (and the synthetic holdout) after every epoch."""

    def __init__(self, test, holdout, verbose, epochs):
        super().__init__()
        self.test, self.holdout, self.verbose, self.epochs = test, holdout, verbose, epochs
        self.history = []

    def _accuracy(self, data):
        x, y = data
        probabilities = self.model.predict(x, batch_size=2048, verbose=0)
        return float(np.mean(np.argmax(probabilities, axis=1) == y))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        row = dict(
            epoch=epoch + 1,
            loss=float(logs.get("loss", float("nan"))),
            accuracy=float(logs.get("accuracy", float("nan"))),
            holdout_accuracy=None if self.holdout is None else self._accuracy(self.holdout),
            test_accuracy=self._accuracy(self.test),
        )
        self.history.append(row)
        if self.verbose:
            holdout = "" if row["holdout_accuracy"] is None else f" holdout_acc={row['holdout_accuracy']:.4f}"
            print(
                f"utility epoch {row['epoch']}/{self.epochs}: loss={row['loss']:.4f} train_acc={row['accuracy']:.4f}"
                f"{holdout} test_acc={row['test_accuracy']:.4f}",
                flush=True,
            )


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected an integer >= {minimum}. Received: {name}={value!r}"
        )


def _check_optimizer(name, value):
    if value not in _OPTIMIZERS:
        raise ValueError(f"Received an invalid value for `{name}`, expected one of {sorted(_OPTIMIZERS)}. "
                         f"Received: {name}={value!r}")


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"Received an invalid value for `{name}`, expected a positive number. Received: {name}={value!r}")


def _validate_images_labels(x_name, y_name, x, y, num_classes):
    """Returns (float32 images in [0, 1], int32 labels) or raises ValueError naming the bad argument."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4:
        raise ValueError(
            f"Received an invalid value for `{x_name}`, expected images shaped [n, height, width, channels]. "
            f"Received: {x_name}.shape={x.shape}"
        )
    if len(x) == 0:
        raise ValueError(f"Received an invalid value for `{x_name}`, expected at least one record. Received: {x_name}.shape={x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"Received an invalid value for `{y_name}`, expected integer labels shaped [{len(x)}] (one per image of "
            f"`{x_name}`). Received: {y_name}.shape={y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"Received an invalid value for `{y_name}`, expected integer labels. Received: dtype={y.dtype}")
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"Received an invalid value for `{y_name}`, expected labels in [0, {num_classes}). "
            f"Received: labels in [{y.min()}, {y.max()}]"
        )
    if np.issubdtype(x.dtype, np.integer):
        if x.min() < 0 or x.max() > 255:
            raise ValueError(
                f"Received an invalid value for `{x_name}`, expected integer pixels in [0, 255]. "
                f"Received: pixels in [{x.min()}, {x.max()}]"
            )
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
            raise ValueError(
                f"Received an invalid value for `{x_name}`, expected float pixels in [0, 1] (rescale [-1, 1] "
                f"generator output with (x + 1) / 2). Received: pixels in [{np.nanmin(x)}, {np.nanmax(x)}]"
            )
        x = x.astype(np.float32)
    else:
        raise ValueError(f"Received an invalid value for `{x_name}`, expected numeric pixels. Received: dtype={x.dtype}")
    return x, y.astype(np.int32)
