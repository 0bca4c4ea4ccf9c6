"""DP-SGD for any Keras model: per-example gradients, joint clipping, a pluggable private aggregation."""

import os

import tensorflow as tf
from absl import logging
from tensorflow import keras

from dlens_tf.models.base import PrivateModel
from dlens_tf.models.per_example import clip_jointly, per_example_gradients
from dlens_tf.privacy import mechanisms as mechanisms_lib
from dlens_tf.privacy.sampling import validate_batch, validate_sampling


def _per_example_loss_fn(loss):
    """The unreduced form of a Keras loss (name, function or `keras.losses.Loss`)."""
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(f"DPModel supports a single loss, not one per output. Received: loss={loss!r}")
    if isinstance(loss, keras.losses.Loss):
        return loss.call  # Loss.call is the per-sample value, before reduction
    fn = keras.losses.get(loss)
    return fn.call if isinstance(fn, keras.losses.Loss) else fn


@keras.saving.register_keras_serializable(package="dlens_tf")
class DPModel(PrivateModel):
    """Trains `model` with DP-SGD: update = mechanism(clip_C(per-example gradients)), applied by the optimizer.

    Each `train_step` (one batch of B examples):
      1. per-example gradients g_i of the compiled loss, vectorised over the batch (equal to a
         loop of one-example gradients);
      2. joint clipping: g_i <- g_i min(1, C / ||g_i||), the norm over all trainable weights;
      3. the mechanism's private update (gaussian: (sum_i g_i + N(0, (zC)^2)) / B; topagg:
         a {-1, 0, 1} vote; topk/randk/lowrank: compressed, noise before or after), scaled per
         example by `sample_weight` in [0, 1] (values outside are clipped to [0, 1]);
      4. `optimizer.apply_gradients(update)` and `count_private_step()`.
    The step is XLA-compilable (`compile(jit_compile=True)`); randomness is counter-based,
    seeded by (seed, step). Batch normalisation is not per-example; do not use it here.

    Privacy (`dp_event_per_step()`, so `dlens_tf.PrivacyBudget` works unchanged):
      sampling="poisson": add/remove-one adjacency, PoissonSampledDpEvent(q, Gaussian(z)) with
        q = batch_size / num_examples. The batches MUST be Poisson-sampled: build them with
        `dlens_tf.privacy.sampling.private_batches(x, y, batch_size)`; a plain
        `fit(x, y, batch_size=...)` shuffles and the Poisson figure would not apply.
        The update is divided by the expected batch size B, never by the sampled count.
      sampling="shuffle": fixed-size batches (e.g. `fit(x, y, batch_size=B)`), replace-one
        adjacency, Gaussian(z / 2) per step with no amplification by sampling claimed: honest
        but pessimistic (one epoch costs as much as ceil(n / B) full-data releases).

    Args:
      model: a built Keras model with trainable weights (its outputs feed the loss).
      mechanism: "gaussian", "topagg", "topk", "randk", "lowrank" or a `Mechanism` instance.
      l2_norm_clip: C > 0.
      noise_multiplier: z >= 0 (noise stddev / the mechanism's add/remove sensitivity).
      batch_size: expected (poisson) or fixed (shuffle) batch size B, 1 <= B <= num_examples.
      num_examples: size n of the private training set.
      sampling: "poisson" or "shuffle" (see above).
      seed: integer for a reproducible noise stream; None draws one from OS entropy.
      mechanism_config: extra constructor arguments of the named mechanism (e.g. rate,
        noise_placement, rank, beta, error_feedback).
    """

    def __init__(self, model, mechanism="gaussian", l2_norm_clip=1.0, noise_multiplier=1.0, batch_size=256,
                 num_examples=60000, sampling="poisson", seed=None, mechanism_config=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(model, dict):
            model = keras.saving.deserialize_keras_object(model)
        if not isinstance(model, keras.Model):
            raise ValueError(f"Received an invalid value for `model`, expected a keras.Model. Received: model={model!r}")
        if not model.built or not model.trainable_variables:
            state = "is not built" if not model.built else "has no trainable weights"
            raise ValueError(
                "Received an invalid value for `model`, expected a built model with trainable weights "
                f"(call it on a batch or give it an input shape first). Received: model {model.name!r}, which {state}"
            )
        validate_batch(batch_size, num_examples)
        validate_sampling(sampling)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"Received an invalid value for `seed`, expected an integer or None. Received: seed={seed!r}")
        if isinstance(mechanism, dict):
            mechanism = keras.saving.deserialize_keras_object(mechanism)
        mechanism_config = dict(mechanism_config or {})
        if isinstance(mechanism, str):
            mechanism_config.update(l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier)
        self.mechanism = mechanisms_lib.get(mechanism, **mechanism_config)
        self.mechanism.build([v.shape for v in model.trainable_variables])
        self.model = model
        self.l2_norm_clip = self.mechanism.l2_norm_clip
        self.noise_multiplier = self.mechanism.noise_multiplier
        self.batch_size, self.num_examples, self.sampling, self.seed = batch_size, num_examples, sampling, seed
        if seed is None:
            self._base_seed = int.from_bytes(os.urandom(4), "little") >> 1
            logging.info("DPModel: noise seed drawn from OS entropy (pass seed=... for a reproducible run).")
        else:
            self._base_seed = seed
            logging.info("DPModel: reproducible noise stream from seed=%d.", seed)

    @property
    def sampling_probability(self):
        return self.batch_size / self.num_examples if self.sampling == "poisson" else None

    def dp_event_per_step(self):
        return self.mechanism.dp_event(self.sampling_probability)

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def compile(self, optimizer="rmsprop", loss=None, **kwargs):
        super().compile(optimizer=optimizer, loss=loss, **kwargs)
        self._example_loss = _per_example_loss_fn(loss)

    def train_step(self, data):
        x, y, weights = keras.utils.unpack_x_y_sample_weight(data)
        grads, predictions, _ = per_example_gradients(self.model, self._example_loss, x, y)
        clipped, _ = clip_jointly(grads, self.mechanism.l2_norm_clip)
        batch = tf.shape(clipped)[0]
        inclusion = tf.ones([batch]) if weights is None else tf.clip_by_value(tf.reshape(tf.cast(weights, tf.float32), [batch]), 0.0, 1.0)
        seed = tf.stack([tf.constant(self._base_seed, tf.int64), self.privacy_steps])
        update = self.mechanism.aggregate(clipped, inclusion, seed, float(self.batch_size))
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(self.mechanism.split(update), variables))
        with tf.control_dependencies([update]):
            # tied to the data: when the iterator is exhausted, graph mode still runs stateful
            # ops that do not depend on the batch, and the step would be counted without happening
            self.count_private_step()
        sample_weight = None if weights is None else inclusion
        self.compute_loss(x, y, predictions, sample_weight)
        return self.compute_metrics(x, y, predictions, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(
            model=keras.saving.serialize_keras_object(self.model),
            mechanism=keras.saving.serialize_keras_object(self.mechanism),
            l2_norm_clip=self.l2_norm_clip,
            noise_multiplier=self.noise_multiplier,
            batch_size=self.batch_size,
            num_examples=self.num_examples,
            sampling=self.sampling,
            seed=self.seed,
        )
        return config


def make_private(model, mechanism="gaussian", l2_norm_clip=1.0, noise_multiplier=1.0, batch_size=256,
                 num_examples=60000, sampling="poisson", seed=None, **mechanism_config):
    """Wraps `model` in a `DPModel`; extra keyword arguments go to the mechanism (see `DPModel`)."""
    return DPModel(model, mechanism=mechanism, l2_norm_clip=l2_norm_clip, noise_multiplier=noise_multiplier,
                   batch_size=batch_size, num_examples=num_examples, sampling=sampling, seed=seed,
                   mechanism_config=mechanism_config)
