"""One DP-SGD experiment end to end: data -> calibrated DPModel -> fit under PrivacyBudget -> test accuracy."""

import dataclasses
import time

import numpy as np
import tensorflow as tf
from tensorflow import keras

from dlens_tf import data as data_lib
from dlens_tf.callbacks import PrivacyBudget
from dlens_tf.models.dp_model import make_private
from dlens_tf.privacy import PrivacyAccountant
from dlens_tf.privacy.calibration import calibrate_noise_multiplier
from dlens_tf.privacy.sampling import private_batches


def small_cnn(input_shape, num_classes=10, seed=0):
    """The CNN of TF Privacy's MNIST DP-SGD tutorial (about 26k weights on 28x28x1), no batch norm."""
    init = keras.initializers.GlorotUniform(seed)
    small = input_shape[0] < 16  # 8x8 digits: one stride-1 conv
    layers = [keras.Input(input_shape)]
    if small:
        layers += [keras.layers.Conv2D(16, 3, activation="relu", kernel_initializer=init)]
    else:
        layers += [
            keras.layers.Conv2D(16, 8, strides=2, padding="same", activation="relu", kernel_initializer=init),
            keras.layers.MaxPool2D(2, 1),
            keras.layers.Conv2D(32, 4, strides=2, padding="valid", activation="relu", kernel_initializer=init),
            keras.layers.MaxPool2D(2, 1),
        ]
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu", kernel_initializer=init),
        keras.layers.Dense(num_classes, kernel_initializer=init),
    ]
    return keras.Sequential(layers)


@dataclasses.dataclass
class DPSGDExperiment:
    """Every setting of one run. Exactly one of `epsilon` (calibrate z) and `noise_multiplier` is set.

    `mechanism_config` holds the mechanism's own arguments (rate, rank, beta, noise_placement,
    error_feedback, sign_clip). `max_train_examples` subsamples the training set (quick runs).
    `tensorboard_dir`: where Keras's TensorBoard callback writes the epoch logs, epsilon included.
    """

    dataset: str = "mnist"
    mechanism: str = "gaussian"
    epsilon: float | None = 2.0
    noise_multiplier: float | None = None
    delta: float = 1e-5
    epochs: int = 2
    batch_size: int = 256
    l2_norm_clip: float = 1.0
    learning_rate: float = 0.5
    momentum: float = 0.0
    accountant: str = "rdp"
    sampling: str = "poisson"
    seed: int | None = 0
    max_train_examples: int | None = None
    jit_compile: bool = False
    mechanism_config: dict = dataclasses.field(default_factory=dict)
    tensorboard_dir: str | None = None

    def run(self, verbose=0):
        """Trains and evaluates; returns a JSON-ready summary dict."""
        if (self.epsilon is None) == (self.noise_multiplier is None):
            raise ValueError(
                "Set exactly one of `epsilon` and `noise_multiplier`. "
                f"Received: epsilon={self.epsilon!r}, noise_multiplier={self.noise_multiplier!r}"
            )
        (x, y), (x_test, y_test) = data_lib.load(self.dataset)
        x, x_test = data_lib.to_float(x), data_lib.to_float(x_test)
        if self.max_train_examples is not None:
            pick = np.random.default_rng(0 if self.seed is None else self.seed).permutation(len(x))[: self.max_train_examples]
            x, y = x[pick], y[pick]
        n = len(x)
        z = self.noise_multiplier
        if z is None:
            z = calibrate_noise_multiplier(self.epsilon, self.delta, self.epochs, self.batch_size, n,
                                           accountant=self.accountant, sampling=self.sampling)
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed)
        classes = int(max(y.max(), y_test.max())) + 1
        model = make_private(small_cnn(x.shape[1:], classes, seed=self.seed or 0), mechanism=self.mechanism,
                             l2_norm_clip=self.l2_norm_clip, noise_multiplier=z, batch_size=self.batch_size,
                             num_examples=n, sampling=self.sampling, seed=self.seed, **self.mechanism_config)
        model.compile(keras.optimizers.SGD(self.learning_rate, momentum=self.momentum),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                      jit_compile=self.jit_compile)
        callbacks = []
        if self.epsilon is not None:
            callbacks.append(PrivacyBudget(self.epsilon, self.delta, accountant=self.accountant, verbose=verbose))
        if self.tensorboard_dir:  # after the budget, which adds epsilon to the logs
            callbacks.append(keras.callbacks.TensorBoard(self.tensorboard_dir))
        start = time.perf_counter()
        train = private_batches(x, y, self.batch_size, self.sampling, seed=self.seed)
        history = model.fit(train, epochs=self.epochs, verbose=verbose, callbacks=callbacks)
        seconds = time.perf_counter() - start
        _, accuracy = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
        steps = int(model.privacy_steps.numpy())
        spent = None  # no noise: no finite epsilon
        if z > 0:
            spent = PrivacyAccountant(self.accountant).compose(model.dp_event_per_step(), steps).get_epsilon(self.delta)
        return {
            **dataclasses.asdict(self),
            "noise_multiplier": z,
            "num_train_examples": n,
            "privacy_steps": steps,
            "epsilon_spent": spent,
            "test_accuracy": float(accuracy),
            "train_accuracy_last_epoch": float(history.history["accuracy"][-1]),
            "train_seconds": seconds,
            "seconds_per_step": seconds / max(steps, 1),
            "tensorflow_version": tf.__version__,
        }
