"""Noise that changes from one private step to the next, at a budget fixed in advance.

A run of Gaussian mechanisms without subsampling (TopAgg's steps) costs what one Gaussian mechanism of
precision sum_t (sensitivity / sigma_t)^2 costs, so at a fixed budget the noise can be spread unevenly
over the steps. `GeometricNoiseSchedule` moves sigma geometrically from `start` to `end` over `steps`
steps; its `dp_event(num_steps, ...)` is the exact composition that the accountant charges.
"""

import math

import dp_accounting
import numpy as np
import tensorflow as tf
from tensorflow import keras

from dlens_tf.privacy.accountant import PrivacyAccountant


def _check_sigma(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not math.isfinite(value) \
            or value <= 0:
        raise ValueError(f"Received an invalid value for `{name}`, expected a positive finite number. "
                         f"Received: {name}={value!r}")
    return float(value)


def _check_steps(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"Received an invalid value for `{name}`, expected an integer >= {minimum}. "
                         f"Received: {name}={value!r}")
    return int(value)


@keras.saving.register_keras_serializable(package="dlens_tf")
class GeometricNoiseSchedule:
    """sigma of private step t (0-based): start * (end / start) ** (t / (steps - 1)) for t < steps, then `end`.

    The values are held as float32, the precision the noise is drawn in, and the accounting uses the same
    float32 values, so the noise added is exactly the noise charged.

    Args:
      start: sigma of the first step (> 0).
      end: sigma of step `steps - 1` and of every later step (> 0).
      steps: length of the ramp (>= 1; with 1, every step has `end`).
    """

    def __init__(self, start, end, steps):
        self.start, self.end = _check_sigma("start", start), _check_sigma("end", end)
        self.steps = _check_steps("steps", steps, 1)
        fraction = np.arange(self.steps) / (self.steps - 1) if self.steps > 1 else np.ones(1)
        self._table = (self.start * (self.end / self.start) ** fraction).astype(np.float32)

    def values(self, num_steps):
        """float64 numpy [num_steps]: sigma of steps 0 .. num_steps - 1 (the float32 values used)."""
        num_steps = _check_steps("num_steps", num_steps, 0)
        index = np.minimum(np.arange(num_steps), self.steps - 1)
        return self._table[index].astype(np.float64)

    def __call__(self, step):
        """float32 scalar tensor: sigma of the (int) step `step`."""
        step = tf.minimum(tf.cast(step, tf.int64), self.steps - 1)
        return tf.gather(tf.constant(self._table), step)

    def dp_event(self, num_steps, event_of_sigma):
        """dp_accounting event of steps 0 .. num_steps - 1, step t costing `event_of_sigma(sigma_t)`."""
        sigmas = self.values(num_steps)
        events = [event_of_sigma(float(s)) for s in sigmas[: self.steps]]
        if num_steps > self.steps:
            events.append(dp_accounting.SelfComposedDpEvent(event_of_sigma(float(sigmas[-1])), num_steps - self.steps))
        return dp_accounting.ComposedDpEvent(events)

    def scaled(self, factor):
        """The same ramp with every sigma multiplied by `factor` (> 0)."""
        factor = _check_sigma("factor", factor)
        return GeometricNoiseSchedule(self.start * factor, self.end * factor, self.steps)

    def get_config(self):
        return dict(start=self.start, end=self.end, steps=self.steps)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, GeometricNoiseSchedule) and self.get_config() == other.get_config()

    def __repr__(self):
        return f"GeometricNoiseSchedule(start={self.start:g}, end={self.end:g}, steps={self.steps})"


def longest_geometric_schedule(start, end, event_of_sigma, epsilon, delta, accountant="rdp"):
    """The `GeometricNoiseSchedule(start, end, steps)` with the most steps whose whole ramp fits (epsilon, delta).

    Args:
      start, end: first and last sigma of the ramp.
      event_of_sigma: the dp_accounting event of one step at a given sigma.
      epsilon, delta: the budget; accountant: "rdp" or "pld".

    Raises:
      ValueError: if not even one step at `end` fits the budget.
    """
    _check_sigma("start", start)
    _check_sigma("end", end)
    acc = PrivacyAccountant(accountant)
    steps = acc.max_steps(lambda n: GeometricNoiseSchedule(start, end, max(n, 1)).dp_event(n, event_of_sigma),
                          epsilon, delta)
    if steps < 1:
        raise ValueError(f"Received an invalid value for `end`, expected a noise at which one step fits the budget "
                         f"(epsilon={epsilon}, delta={delta}). Received: start={start}, end={end}")
    return GeometricNoiseSchedule(start, end, steps)
