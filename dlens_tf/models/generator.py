"""Conditional DCGAN generator: the DataLens student."""

import numpy as np
import tensorflow as tf
from tensorflow import keras

from dlens_tf.data.scaling import to_uint8
from dlens_tf.models.teachers import _positive_int, validate_image_shape


@keras.saving.register_keras_serializable(package="dlens_tf")
class Generator(keras.Model):
    """Conditional DCGAN generator: images in [-1, 1] from noise z and a one-hot label y.

    output = tanh(deconv(relu(bn(deconv(relu(bn(dense(relu(bn(dense(z ++ y))) ++ y))) ++ y))) ++ y))
    with 5x5 stride-2 transposed convolutions from (H/4, W/4) to (H, W), the label concatenated
    to every layer's input (as constant channels for the convolutions), and batch normalisation
    with momentum 0.9 (the paper's conditional DCGAN generator; tanh instead of sigmoid output).

    Args:
      z_dim: size of the noise vector.
      num_classes: number of classes of the one-hot label.
      image_shape: (H, W, C) of the generated images; H and W divisible by 4.
      dense_units: width of the first dense layer.
      filters: channels of the (H/4, W/4) and (H/2, W/2) feature maps.

    Input shape:
      `[z, y_onehot]` with z `[batch, z_dim]` and y_onehot `[batch, num_classes]`.
    Output shape:
      `[batch, H, W, C]` in [-1, 1].
    """

    def __init__(self, z_dim=50, num_classes=10, image_shape=(28, 28, 1), dense_units=1024, filters=128, **kwargs):
        super().__init__(**kwargs)
        self.z_dim = _positive_int("z_dim", z_dim)
        self.num_classes = _positive_int("num_classes", num_classes)
        self.image_shape = validate_image_shape(image_shape)
        h, w, c = self.image_shape
        if h % 4 or w % 4:
            raise ValueError(f"Received an invalid value for `image_shape`, expected height and width divisible "
                             f"by 4. Received: image_shape={image_shape!r}")
        self.dense_units = _positive_int("dense_units", dense_units)
        self.filters = _positive_int("filters", filters)
        self._base = (h // 4, w // 4)
        bn = lambda name: keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)  # noqa: E731
        self.dense1 = keras.layers.Dense(self.dense_units, name="dense1")
        self.bn1 = bn("bn1")
        self.dense2 = keras.layers.Dense(self.filters * self._base[0] * self._base[1], name="dense2")
        self.bn2 = bn("bn2")
        self.deconv1 = keras.layers.Conv2DTranspose(self.filters, 5, 2, "same", name="deconv1")
        self.bn3 = bn("bn3")
        self.deconv2 = keras.layers.Conv2DTranspose(c, 5, 2, "same", name="deconv2")

    @staticmethod
    def _with_label_channels(h, y):
        shape = tf.shape(h)
        maps = tf.broadcast_to(y[:, None, None, :], [shape[0], shape[1], shape[2], tf.shape(y)[-1]])
        return tf.concat([h, maps], -1)

    def call(self, inputs, training=None):
        z, y = inputs
        z = tf.convert_to_tensor(z, self.compute_dtype)
        y = tf.convert_to_tensor(y, self.compute_dtype)
        h = tf.nn.relu(self.bn1(self.dense1(tf.concat([z, y], -1)), training=training))
        h = tf.nn.relu(self.bn2(self.dense2(tf.concat([h, y], -1)), training=training))
        h = tf.reshape(h, [-1, self._base[0], self._base[1], self.filters])
        h = tf.nn.relu(self.bn3(self.deconv1(self._with_label_channels(h, y)), training=training))
        return tf.tanh(self.deconv2(self._with_label_channels(h, y)))

    def build(self, input_shape=None):
        """Creates the weights (called with the default input shapes when none is given)."""
        if not self.built:
            self.call([tf.zeros([1, self.z_dim]), tf.zeros([1, self.num_classes])], training=False)
            self.built = True

    def get_build_config(self):
        return {"input_shape": [(None, self.z_dim), (None, self.num_classes)]}

    def build_from_config(self, config):
        self.build()

    def sample(self, n, labels=None, batch_size=1000, seed=None):
        """Draws n synthetic records (post-processing of the trained generator: no privacy cost).

        Args:
          n: number of records.
          labels: int class per record `[n]`; None = balanced, record j gets class j % num_classes.
          batch_size: records per generator call.
          seed: seed of the noise z; None = OS entropy.

        Returns:
          (x uint8 `[n, H, W, C]`, y int64 `[n]`).
        """
        n = _positive_int("n", n)
        batch_size = _positive_int("batch_size", batch_size)
        if labels is None:
            labels = np.arange(n) % self.num_classes
        labels = np.asarray(labels)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"Received an invalid value for `labels`, expected {n} integer labels. "
                             f"Received: shape={labels.shape}, dtype={labels.dtype}")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"Received an invalid value for `labels`, expected values in [0, {self.num_classes}). "
                             f"Received: min={labels.min()}, max={labels.max()}")
        noise = np.random.default_rng(seed)
        out = []
        for start in range(0, n, batch_size):
            lab = labels[start : start + batch_size]
            z = noise.uniform(-1.0, 1.0, (len(lab), self.z_dim)).astype(np.float32)
            out.append(to_uint8(self([z, tf.one_hot(lab, self.num_classes)], training=False).numpy()))
        return np.concatenate(out), labels.astype(np.int64)

    def get_config(self):
        config = super().get_config()
        config.update(z_dim=self.z_dim, num_classes=self.num_classes, image_shape=self.image_shape,
                      dense_units=self.dense_units, filters=self.filters)
        return config
