"""The contract between a differentially private model and `PrivacyBudget`."""

import tensorflow as tf
from tensorflow import keras


class PrivateModel(keras.Model):
    """A Keras model whose every `train_step` is a DP mechanism with a data-independent cost.

    Subclasses implement `dp_event_per_step()` (the dp_accounting event of ONE call of
    `train_step`) and call `self.count_private_step()` inside `train_step`. The counter
    `privacy_steps` is a model variable, so checkpoints and `.keras` files carry it and a
    resumed run continues the accountant where it stopped.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.privacy_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="privacy_steps")

    def dp_event_per_step(self):
        """The dp_accounting.DpEvent of one `train_step` call."""
        raise NotImplementedError(f"{type(self).__name__} must implement dp_event_per_step().")

    def count_private_step(self):
        """Record that one private step was applied; call it inside `train_step`."""
        self.privacy_steps.assign_add(1)
