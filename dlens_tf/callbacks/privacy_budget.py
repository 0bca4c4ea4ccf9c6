"""Keras callback that spends a differential-privacy budget and never overshoots it."""

import json
import os

from absl import logging
from tensorflow import keras

from dlens_tf.privacy.accountant import PrivacyAccountant, repeated_event, validate_delta, validate_epsilon


class BudgetExhaustedError(RuntimeError):
    """Raised when training starts with no budget left for even one step."""


class PrivacyBudget(keras.callbacks.Callback):
    """Stops `model.fit` before the step whose DP events would exceed (epsilon, delta).

    The model must implement the `dlens_tf.models.PrivateModel` contract: `dp_event_per_step()`
    (the event of one `train_step`; or `dp_event_of_steps(n)`, the event of its first n steps, when
    steps cost differently, as under a noise schedule) and a `privacy_steps` counter it increments per step.
    Before training, the callback computes how many steps the budget allows in total; after
    each batch it checks that the next call of the train function (`steps_per_execution`
    steps) still fits, and otherwise sets `model.stop_training`, so the step that would pass
    the budget is never run. Because the spent steps live in the model, a resumed run
    continues the count (epsilon never resets).

    A checkpoint restores the counter as it was when the checkpoint was written, so steps run
    after it and then lost (the process was killed) would be released without being charged.
    With `ledger`, the callback writes to that file, before every call of the train function,
    the step count that call will reach, and at the start of training charges the model for the
    steps a previous process started beyond the restored counter: `privacy_steps` is raised to
    the ledger's count and the model's random state moves on (`PrivateModel.charge_lost_steps`).
    A lost step is therefore never released uncharged, and its redo draws fresh noise; a step
    interrupted before it released anything is charged too (conservative).

    Spent epsilon is written into the Keras logs as `epsilon` after every batch and epoch, so
    the progress bar, `History`, and callbacks listed AFTER this one (CSVLogger, TensorBoard)
    record it.

    Args:
      epsilon: the target epsilon (> 0).
      delta: the target delta, in (0, 1).
      accountant: "rdp" (TF Privacy's RDP) or "pld" (tight); see `PrivacyAccountant`. RDP costs
        microseconds per batch; "pld" is as cheap for Gaussian compositions (TopAgg, DataLens) but
        composes a privacy-loss distribution per batch for Poisson-sampled events (DP-SGD), about
        0.5 s each on a 2-core CPU.
      verbose: log a line when training stops for the budget.
      ledger: path of a JSON file recording the steps started (see above), or None. Keep one
        ledger per run, beside its checkpoints.
    """

    def __init__(self, epsilon, delta, accountant="rdp", verbose=1, ledger=None):
        super().__init__()
        validate_epsilon(epsilon)
        validate_delta(delta)
        self.epsilon = float(epsilon)
        self.delta = float(delta)
        self.accountant = PrivacyAccountant(accountant).accountant
        self.verbose = verbose
        self.ledger = None if ledger is None else os.fspath(ledger)
        self.lost_steps = 0  # charged under this ledger, by every process, for steps lost between checkpoints
        self.max_steps = None
        self.history = []  # (privacy step, epsilon) after every batch
        self._events = None  # n -> the dp_accounting event of the model's first n steps
        self._eps_cache = {}

    def _steps(self):
        return int(self.model.privacy_steps.numpy())

    def epsilon_after(self, steps):
        """Epsilon spent after `steps` private steps of this model."""
        if steps not in self._eps_cache:
            self._eps_cache[steps] = PrivacyAccountant(self.accountant).compose(self._events(steps)).get_epsilon(self.delta)
        return self._eps_cache[steps]

    def _steps_per_call(self):
        steps_per_execution = getattr(self.model, "_steps_per_execution", None)
        return int(steps_per_execution.numpy()) if steps_per_execution is not None else 1

    def on_train_begin(self, logs=None):
        event_fn = getattr(self.model, "dp_event_per_step", None)
        if event_fn is None or not hasattr(self.model, "privacy_steps"):
            raise ValueError(
                f"PrivacyBudget needs a model that reports its DP events (dlens_tf.models.PrivateModel); "
                f"{type(self.model).__name__} has no dp_event_per_step()/privacy_steps."
            )
        events = getattr(self.model, "dp_event_of_steps", None) or (lambda n: repeated_event(event_fn(), n))
        if events(1) is None:
            raise ValueError(f"{type(self.model).__name__}.dp_event_per_step() returned None: no DP event to account.")
        self._events, self._eps_cache = events, {}
        self.max_steps = PrivacyAccountant(self.accountant).max_steps(events, self.epsilon, self.delta)
        self._charge_lost_steps()
        spent = self._steps()
        if spent + self._steps_per_call() > self.max_steps:
            raise BudgetExhaustedError(
                f"The privacy budget (epsilon={self.epsilon}, delta={self.delta}) allows {self.max_steps} steps of "
                f"{type(self.model).__name__}; {spent} were already spent and the next "
                f"{self._steps_per_call()} would exceed it. Nothing was trained."
            )

    def _read_ledger(self):
        if not os.path.exists(self.ledger):
            return dict(started_steps=0, lost_steps=0)
        try:
            with open(self.ledger) as f:
                record = json.load(f)
            return dict(started_steps=int(record["started_steps"]), lost_steps=int(record["lost_steps"]))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"The privacy ledger {self.ledger} is unreadable ({e}); refusing to train, since it "
                             f"may record steps that were released but not checkpointed.") from e

    def _write_ledger(self, started, lost):
        tmp = self.ledger + ".tmp"
        with open(tmp, "w") as f:
            json.dump(dict(started_steps=started, lost_steps=lost), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.ledger)  # atomic: a kill leaves the old or the new record, never half of one

    def _charge_lost_steps(self):
        if self.ledger is None:
            return
        if not hasattr(self.model, "charge_lost_steps"):
            raise ValueError(f"A ledger needs a dlens_tf.models.PrivateModel; {type(self.model).__name__} has no "
                             "charge_lost_steps().")
        record = self._read_ledger()
        lost = self.model.charge_lost_steps(max(record["started_steps"], self._steps()))
        if lost:
            logging.warning("PrivacyBudget: charging %d step(s) started after the last checkpoint by an earlier "
                            "process (ledger %s).", lost, self.ledger)
        self.lost_steps = record["lost_steps"] + lost
        self._write_ledger(self._steps(), self.lost_steps)

    def on_train_batch_begin(self, batch, logs=None):
        if self.ledger is not None:  # on disk before the step can release anything
            self._write_ledger(self._steps() + self._steps_per_call(), self.lost_steps)

    def on_train_batch_end(self, batch, logs=None):
        steps = self._steps()
        if steps > self.max_steps:  # cannot happen unless the model counts steps wrongly
            raise BudgetExhaustedError(f"{steps} private steps exceed the {self.max_steps} the budget allows.")
        eps = self.epsilon_after(steps)
        self.history.append((steps, eps))
        if logs is not None:
            logs["epsilon"] = eps
        if steps + self._steps_per_call() > self.max_steps:
            self.model.stop_training = True
            if self.verbose:
                logging.info("PrivacyBudget: stopping after %d steps, epsilon=%.4f of %.4f (delta=%g).",
                             steps, eps, self.epsilon, self.delta)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epsilon"] = self.epsilon_after(self._steps())

    @property
    def budget_exhausted(self):
        """True once no further step fits in the budget."""
        return self.max_steps is not None and self._steps() + self._steps_per_call() > self.max_steps
