"""Progress reporting for long private training runs."""

import os
import time

import tensorflow as tf
from tensorflow import keras


class BudgetProgress(keras.callbacks.Callback):
    """Progress lines for long private runs: step / budget, epsilon, losses, ETA; a history row per epoch.

    Goes after `PrivacyBudget` in the callback list: it reads `budget.max_steps` and the epsilon
    that callback logs. With `max_seconds` > 0 it stops training (at a step boundary, for a later
    resume) once that much time has passed, and while the budget outlasts that time each progress line
    says when this part stops.

    Args:
      budget: the run's `PrivacyBudget`.
      every_seconds: seconds between progress lines.
      max_seconds: stop after this long; 0 means no limit.
      csv_path: file receiving one row per epoch (appended to when it exists, as on resume).
      tensorboard_dir: optional directory receiving the same rows as TensorBoard scalars, one per column,
        at step = generator steps spent (so a resumed run continues the curves).
    """

    _COLUMNS = ("generator_steps", "epsilon", "d_loss", "g_loss", "votes_kept")

    def __init__(self, budget, every_seconds, max_seconds, csv_path, tensorboard_dir=None):
        super().__init__()
        self.budget, self.every_seconds, self.max_seconds = budget, every_seconds, max_seconds
        self.csv_path = csv_path
        self.writer = tf.summary.create_file_writer(tensorboard_dir) if tensorboard_dir else None
        self.stopped_for_time = False
        if not os.path.exists(csv_path):
            with open(csv_path, "w") as f:
                f.write(",".join(self._COLUMNS) + "\n")

    def on_train_begin(self, logs=None):
        self.start = self.last = time.time()
        self.start_steps = int(self.model.privacy_steps.numpy())
        print(f"budget eps={self.budget.epsilon} delta={self.budget.delta} ({self.budget.accountant}): "
              f"{self.budget.max_steps} generator steps; {self.start_steps} already spent"
              f"{f' ({self.budget.lost_steps} for steps lost between checkpoints)' if self.budget.lost_steps else ''}.",
              flush=True)

    def on_train_batch_end(self, batch, logs=None):
        now = time.time()
        if self.max_seconds and now - self.start >= self.max_seconds and not self.budget.budget_exhausted:
            self.model.stop_training = self.stopped_for_time = True
        if now - self.last >= self.every_seconds or self.model.stop_training:
            self.last = now
            steps = int(self.model.privacy_steps.numpy())
            per_step = (now - self.start) / max(steps - self.start_steps, 1)
            values = "".join(f"{k}={float(v):.4g} " for k, v in (logs or {}).items())
            eta, left = (self.budget.max_steps - steps) * per_step, self.max_seconds - (now - self.start)
            part = f", this part stops in {max(left, 0.0) / 60:.1f} min" if self.max_seconds and eta > left else ""
            print(f"step {steps}/{self.budget.max_steps} {values}{per_step:.2f} s/step, "
                  f"ETA {eta / 60:.1f} min{part}", flush=True)

    def on_epoch_end(self, epoch, logs=None):
        row = dict(logs or {}, generator_steps=int(self.model.privacy_steps.numpy()))
        with open(self.csv_path, "a") as f:
            f.write(",".join(str(row.get(k, "")) for k in self._COLUMNS) + "\n")
        if self.writer is not None:
            with self.writer.as_default(step=row["generator_steps"]):
                for name in self._COLUMNS[1:]:
                    if name in row:
                        tf.summary.scalar(name, float(row[name]))
            self.writer.flush()
