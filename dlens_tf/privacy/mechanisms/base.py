"""The interface every DP-SGD aggregation mechanism implements, and its privacy bookkeeping.

A mechanism turns a batch of clipped per-example gradients [B, D] (each row of L2 norm <= C)
into one update [D] in three stages:
  1. `contributions(clipped, seed)`: each example's vector (possibly compressed) [B, m];
  2. their sum plus N(0, noise_stddev^2) on every one of the m coordinates;
  3. `release(noisy_sum, seed, normalizer)`: post-processing back to [D] (divide, vote,
     decompress). Post-processing costs no privacy.
The sensitivity of stage 2's sum is the largest L2 norm of one contribution (add/remove-one
adjacency) or the largest distance between two (replace-one), for ANY input rows of norm <= C
and any value of the shared randomness; `sensitivity()` states it and the tests check it on
adversarial inputs. `noise_multiplier` z always means noise_stddev / (add/remove sensitivity),
so for one z every mechanism has the same privacy cost and `calibrate_noise_multiplier`
serves them all.
"""

import math

import dp_accounting
import tensorflow as tf
from tensorflow import keras

from dlens_tf.compression import rng

ADJACENCIES = ("add_remove", "replace_one")


def _validate_positive(name, value, allow_zero=False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        expected = "a finite number >= 0" if allow_zero else "a positive finite number"
        raise ValueError(f"Received an invalid value for `{name}`, expected {expected}. Received: {name}={value!r}")


class Mechanism(tf.Module):
    """Base class of the DP-SGD aggregation mechanisms (see the module docstring).

    Args:
      l2_norm_clip: C, the bound on every per-example gradient's L2 norm (> 0).
      noise_multiplier: z >= 0; noise_stddev = z * sensitivity("add_remove").
    """

    name = None

    def __init__(self, l2_norm_clip=1.0, noise_multiplier=1.0):
        super().__init__(name=self.name)
        _validate_positive("l2_norm_clip", l2_norm_clip)
        _validate_positive("noise_multiplier", noise_multiplier, allow_zero=True)
        self.l2_norm_clip = float(l2_norm_clip)
        self.noise_multiplier = float(noise_multiplier)
        self.dimension = None

    def build(self, variable_shapes):
        """Fixes the model's variable shapes (flattened in this order into D coordinates)."""
        self.variable_shapes = [tuple(int(s) for s in shape) for shape in variable_shapes]
        self.dimension = sum(math.prod(s) for s in self.variable_shapes)

    # --- privacy -------------------------------------------------------------------------
    def contribution_bound(self):
        """Largest L2 norm of one example's contribution."""
        return self.l2_norm_clip

    def sensitivity(self, adjacency="add_remove"):
        """L2 sensitivity of the summed contributions: one contribution's bound for add/remove-one,
        twice it for replace-one (two contributions of norm <= b differ by at most 2b)."""
        if adjacency not in ADJACENCIES:
            raise ValueError(
                f"Received an invalid value for `adjacency`, expected one of {ADJACENCIES}. Received: adjacency={adjacency!r}"
            )
        bound = self.contribution_bound()
        return bound if adjacency == "add_remove" else 2.0 * bound

    @property
    def noise_stddev(self):
        return self.noise_multiplier * self.sensitivity("add_remove")

    def dp_event(self, sampling_probability=None):
        """The dp_accounting event of one step.

        Poisson sampling with probability q (add/remove-one adjacency):
          PoissonSampledDpEvent(q, GaussianDpEvent(z)).
        A fixed batch (`sampling_probability=None`, replace-one adjacency, no amplification by
        sampling claimed): GaussianDpEvent(noise_stddev / sensitivity("replace_one")) = z / 2.
        """
        if sampling_probability is None:
            stddev_ratio = self.noise_stddev / self.sensitivity("replace_one")
            return dp_accounting.GaussianDpEvent(stddev_ratio)
        if not 0 < sampling_probability <= 1:
            raise ValueError(
                "Received an invalid value for `sampling_probability`, expected a number in (0, 1]. "
                f"Received: sampling_probability={sampling_probability!r}"
            )
        gaussian = dp_accounting.GaussianDpEvent(self.noise_stddev / self.sensitivity("add_remove"))
        return dp_accounting.PoissonSampledDpEvent(sampling_probability, gaussian)

    # --- computation ---------------------------------------------------------------------
    def contributions(self, clipped, seed):
        """Each example's vector before summing: [B, D] -> [B, m]. Identity by default."""
        del seed
        return clipped

    def release(self, noisy_sum, seed, normalizer):
        """Post-processing of the noisy sum [m] into an update [D]. Default: divide.

        `seed` is the one `contributions` received (shared public randomness)."""
        del seed
        return noisy_sum / normalizer

    def aggregate(self, clipped, weights, seed, normalizer):
        """The private update [D] from clipped per-example gradients [B, D].

        Args:
          clipped: [B, D] rows of L2 norm <= C.
          weights: [B] in [0, 1] scaling each contribution (0 for padding rows).
          seed: shape-[2] integer tensor; the noise and the compressor use distinct sub-streams.
          normalizer: the public divisor (expected batch size for Poisson sampling).
        """
        seed = tf.cast(seed, tf.int64)
        compress_seed, noise_seed = seed + [11, 0], seed + [23, 0]
        contributions = self.contributions(clipped, compress_seed)
        summed = tf.linalg.matvec(contributions, tf.cast(weights, contributions.dtype), transpose_a=True)
        noisy = summed + rng.normal(tf.shape(summed), noise_seed, stddev=self.noise_stddev, dtype=summed.dtype)
        return self.release(noisy, compress_seed, tf.cast(normalizer, summed.dtype))

    def split(self, flat):
        """[D] -> list of tensors shaped like the model's variables."""
        sizes = [math.prod(s) for s in self.variable_shapes]
        return [tf.reshape(part, shape) for part, shape in zip(tf.split(flat, sizes), self.variable_shapes)]

    def get_config(self):
        return {"l2_norm_clip": self.l2_norm_clip, "noise_multiplier": self.noise_multiplier}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def register(cls):
    """Registers a mechanism class for Keras serialisation."""
    return keras.saving.register_keras_serializable(package="dlens_tf")(cls)
