"""The contract between a differentially private model and `PrivacyBudget`."""

import tensorflow as tf
from tensorflow import keras

from dlens_tf.privacy.accountant import repeated_event


class PrivateModel(keras.Model):
    """A Keras model whose every `train_step` is a DP mechanism with a data-independent cost.

    Subclasses implement `dp_event_per_step()` (the dp_accounting event of ONE call of
    `train_step`), or `dp_event_of_steps(n)` if their steps cost differently, and call
    `self.count_private_step()` inside `train_step`. The counter `privacy_steps` is a model
    variable, so checkpoints and `.keras` files carry it and a resumed run continues the
    accountant where it stopped.
    """

    # Draws a tf.random.Generator skips per step counted at a charge: more than any process draws.
    _SKIP_PER_CHARGED_STEP = 2**32

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.privacy_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="privacy_steps")

    def dp_event_per_step(self):
        """The dp_accounting.DpEvent of one `train_step` call."""
        raise NotImplementedError(f"{type(self).__name__} must implement dp_event_per_step().")

    def dp_event_of_steps(self, num_steps):
        """The dp_accounting.DpEvent of private steps 0 .. num_steps - 1 (what `PrivacyBudget` charges).

        By default `num_steps` repetitions of `dp_event_per_step()`; models whose steps differ (a noise
        schedule) override it.
        """
        return repeated_event(self.dp_event_per_step(), num_steps)

    def count_private_step(self):
        """Record that one private step was applied; call it inside `train_step`."""
        self.privacy_steps.assign_add(1)

    def charge_lost_steps(self, started_steps):
        """Charges the steps a previous process started beyond this model's restored counter.

        Sets `privacy_steps` to `started_steps` and advances every `tf.random.Generator` the model
        tracks by `started_steps * 2**32` draws: past all a process draws, and to a new place at
        every charge from the same restored state (the count only grows). A redone step is then an
        independent release, not a replay whose noise repeats. Models that seed noise from
        `privacy_steps` (`DPModel`) get fresh noise from the new count too.

        Args:
          started_steps: the steps started in all (a `PrivacyBudget` ledger's count); must not be
            below `privacy_steps`.
        """
        lost = int(started_steps) - int(self.privacy_steps.numpy())
        if lost < 0:
            raise ValueError(f"started_steps={started_steps} is below the {int(self.privacy_steps.numpy())} "
                             "steps this model has already counted.")
        if lost:
            self.privacy_steps.assign(int(started_steps))
            for obj in tf.train.TrackableView(self).descendants():
                if isinstance(obj, tf.random.Generator):
                    obj.skip(int(started_steps) * self._SKIP_PER_CHARGED_STEP)
        return lost
