"""DataLens (Wang et al., CCS 2021): a DP data generator taught by an ensemble of teacher discriminators."""

import numpy as np
import tensorflow as tf
from tensorflow import keras

from dlens_tf.compression import rng
from dlens_tf.data.partition import partition
from dlens_tf.models.base import PrivateModel
from dlens_tf.models.checkpoints import restore_checkpoint
from dlens_tf.models.generator import Generator
from dlens_tf.models.teachers import TeacherEnsemble, _positive_float, _positive_int
from dlens_tf.privacy.noise_schedule import GeometricNoiseSchedule
from dlens_tf.privacy.topagg import TopAgg, topagg_dp_event


REAL_SAMPLING = ("replacement", "shuffle")
VOTE_OUTPUTS = ("sign", "noisy_sum")


def _deserialize(obj, expected, name):
    if isinstance(obj, dict):
        obj = keras.saving.deserialize_keras_object(obj)
    if not isinstance(obj, expected):
        raise ValueError(f"Received an invalid value for `{name}`, expected a {expected.__name__}. "
                         f"Received: {name}={type(obj).__name__}")
    return obj


@keras.saving.register_keras_serializable(package="dlens_tf")
class DataLens(PrivateModel):
    """Trains a conditional generator on TopAgg-aggregated gradients of N teacher discriminators.

    One `train_step` is Algorithm 1 of the paper for a batch of m = `batch_size` records:
      1. z ~ U(-1, 1)^{m x z_dim}, y ~ U{0..classes-1}^m, x = G(z, y);
      2. `d_steps` updates of every teacher i on (m records from ITS OWN partition, sampled as
         `real_sampling` says, the shared synthetic batch x; with `label_matched_fakes`, instead m synthetic
         records G(z_j, y'_j) carrying the labels y' of its real batch, as in the official code);
      3. every teacher's image gradient g_j^(i) = -dL_G^(i)/dx_j  ->  [N, m, H, W, C];
      4. gbar = TopAgg(g) in {-1, 0, 1}^{m x H x W x C} (XLA-compiled; the only DP mechanism); with
         `vote_pool` p > 1, TopAgg votes on each teacher's gradient averaged over p x p pixel blocks
         ([N, m, H/p, W/p, C]) and every vote is repeated over its block; with `vote_output="noisy_sum"`,
         gbar = V / sigma instead, V being TopAgg's noisy vote sums before the threshold;
      5. one optimizer step of G on (1/m) sum_j ||G(z_j, y_j) - stop_gradient(x_j + gamma * gbar_j)||^2.

    Privacy: only step 4's output leaves the teachers, and each synthetic record is one TopAgg query,
    so one step is `topagg.dp_event(batch_size)` (`dp_event_per_step`; under a `noise_schedule`, at that step's
    sigma: `dp_event_of_steps`). Teacher updates (steps 2 and
    the pre-training) read the sensitive data but release nothing, so they are not queries: the
    generator never sees real data, only gbar. The sensitive partitions are held in memory by
    `set_partitions` / `set_data` and are never written to checkpoints.

    Training: `compile()` (default optimizer Adam(learning_rate, beta_1) for G), `set_data(x, y)` or
    `set_partitions(x_parts, y_parts)`, then `fit(steps_per_epoch=..., epochs=...)` with no data
    argument: the model samples from the partitions it holds. Before the first step `fit` runs the
    remaining of `pretrain_steps` teacher pre-training steps (the paper uses 10). Checkpoints
    (`save_weights` / `tf.train.Checkpoint`) hold the generator, the teachers, both optimizers' state,
    `privacy_steps`, the pre-training progress and the RNG states, so a resumed run continues all;
    `restore_checkpoint` resumes one with a variable at a time in memory, not the whole checkpoint, and
    `dlens_tf.models.save_checkpoint(manager)` saves one to disk without a page-cache copy of it.

    Args:
      generator: a `Generator` (or its serialised config).
      teachers: a `TeacherEnsemble` (or its serialised config) of the same image shape and classes.
      topagg: a `TopAgg` layer (or its serialised config): k, sigma, beta, clip.
      batch_size: synthetic records m per generator step.
      gamma: step size of the image update x + gamma * gbar.
      d_steps: teacher updates per generator step.
      pretrain_steps: teacher updates before the first generator step.
      label_matched_fakes: train each teacher on synthetic records generated with its real batch's
        labels (from one pool G(z_j, c) for every class c), so that a teacher cannot tell real from
        fake by the labels alone (with 15 records a partition lacks some classes). Teacher i's fakes
        depend on its own partition only, so the privacy analysis is unchanged.
      learning_rate, beta_1: the default generator optimizer Adam(learning_rate, beta_1).
      real_sampling: how each teacher update draws its m real records from the teacher's partition:
        "replacement" (independently, with replacement) or "shuffle" (the first m of a fresh random order
        of the partition, cycling through it again if m exceeds its size; with m equal to the partition
        size, every update sees the whole partition, as in the official code). Either way a teacher's
        batch comes from its own partition only, so the privacy analysis is unchanged.
      vote_pool: side p of the pixel blocks TopAgg votes on (1 = every pixel). Pooling is a fixed linear map
        of each teacher's own gradient, so each teacher still contributes at most k entries of +-1 and the
        privacy analysis is unchanged; at a fixed budget sigma grows with sqrt(k), and p x p blocks let k
        shrink p^2-fold for the same share of coordinates, so the same votes face p-fold less noise
        (on MNIST at eps = 1 the teachers agreed less on blocks, and it did not help: see docs/datalens_results.md).
      vote_output: what the generator follows: "sign" (the paper's thresholded votes, in {-1, 0, 1}) or
        "noisy_sum" (the noisy vote sums V before the threshold, divided by sigma). Both are functions of
        the same Gaussian mechanism's output V, so the privacy analysis is unchanged. When the teachers'
        clean sum s is small against sigma, V / sigma responds to s with gain 1 / sigma at unit noise
        variance, while the threshold-and-sign at beta * N = 0.56 sigma (eps = 1) has gain 0.68 / sigma at
        noise variance 0.575: V / sigma has about 1.24 times the signal-to-noise ratio (squared). In the
        proxy of eps = 1 and 10 it scored within the spread between seeds (docs/datalens_results.md).
      noise_schedule: a `GeometricNoiseSchedule` (or its config), or None. With it, step t's TopAgg noise
        has standard deviation noise_schedule(t) instead of topagg's sigma (the threshold stays beta * N), and
        `dp_event_of_steps` composes each step's own Gaussian event, so `PrivacyBudget` charges exactly the
        noise added. The step index is `privacy_steps`, so a resumed run continues the schedule.
      seed: integer seed of the sampling of z, labels and real batches; None = OS entropy.
    """

    def __init__(self, generator, teachers, topagg, batch_size=30, gamma=1e-3, d_steps=2, pretrain_steps=10,
                 learning_rate=1e-3, beta_1=0.5, label_matched_fakes=False, real_sampling="replacement", vote_pool=1,
                 vote_output="sign", noise_schedule=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.generator = _deserialize(generator, Generator, "generator")
        self.teachers = _deserialize(teachers, TeacherEnsemble, "teachers")
        self.topagg = _deserialize(topagg, TopAgg, "topagg")
        if tuple(self.generator.image_shape) != tuple(self.teachers.image_shape):
            raise ValueError(f"Received an invalid value for `teachers`, expected the generator's image shape "
                             f"{self.generator.image_shape}. Received: image_shape={self.teachers.image_shape}")
        if self.generator.num_classes != self.teachers.num_classes:
            raise ValueError(f"Received an invalid value for `teachers`, expected the generator's "
                             f"{self.generator.num_classes} classes. Received: num_classes={self.teachers.num_classes}")
        self.batch_size = _positive_int("batch_size", batch_size)
        self.gamma = _positive_float("gamma", gamma)
        self.d_steps = _positive_int("d_steps", d_steps)
        if isinstance(pretrain_steps, bool) or not isinstance(pretrain_steps, (int, np.integer)) or pretrain_steps < 0:
            raise ValueError(f"Received an invalid value for `pretrain_steps`, expected an integer >= 0. "
                             f"Received: pretrain_steps={pretrain_steps!r}")
        self.pretrain_steps = int(pretrain_steps)
        self.learning_rate = _positive_float("learning_rate", learning_rate)
        self.beta_1 = _positive_float("beta_1", beta_1, allow_zero=True)
        if not isinstance(label_matched_fakes, (bool, np.bool_)):
            raise ValueError(f"Received an invalid value for `label_matched_fakes`, expected a bool. "
                             f"Received: label_matched_fakes={label_matched_fakes!r}")
        self.label_matched_fakes = bool(label_matched_fakes)
        if real_sampling not in REAL_SAMPLING:
            raise ValueError(f"Received an invalid value for `real_sampling`, expected one of {REAL_SAMPLING}. "
                             f"Received: real_sampling={real_sampling!r}")
        self.real_sampling = real_sampling
        if vote_output not in VOTE_OUTPUTS:
            raise ValueError(f"Received an invalid value for `vote_output`, expected one of {VOTE_OUTPUTS}. "
                             f"Received: vote_output={vote_output!r}")
        self.vote_output = vote_output
        self.noise_schedule = (None if noise_schedule is None
                               else _deserialize(noise_schedule, GeometricNoiseSchedule, "noise_schedule"))
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise ValueError(f"Received an invalid value for `seed`, expected an integer or None. Received: seed={seed!r}")
        self.seed = None if seed is None else int(seed)
        self.image_shape = tuple(self.generator.image_shape)
        self.num_classes = self.generator.num_classes
        self.vote_pool = _positive_int("vote_pool", vote_pool)
        h, w, c = self.image_shape
        if h % self.vote_pool or w % self.vote_pool:
            raise ValueError(f"Received an invalid value for `vote_pool`, expected a divisor of the image height and "
                             f"width {(h, w)}. Received: vote_pool={vote_pool!r}")
        self.vote_shape = (h // self.vote_pool, w // self.vote_pool, c)
        if self.topagg.k > np.prod(self.vote_shape):
            raise ValueError(f"Received an invalid value for `topagg`, expected k at most the {np.prod(self.vote_shape)} "
                             f"coordinates TopAgg votes on (image {self.image_shape}, vote_pool={self.vote_pool}). "
                             f"Received: k={self.topagg.k}")
        self.generator.build()
        self.topagg.build((self.teachers.num_teachers, self.batch_size) + self.vote_shape)
        self._rng = (tf.random.Generator.from_seed(self.seed) if self.seed is not None
                     else tf.random.Generator.from_non_deterministic_state())
        self.pretrained_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="pretrained_steps")
        self._aggregate = tf.function(self.topagg.aggregate, jit_compile=True)
        self._partitions = None
        self._pretrain_function = None

    # ---------------------------------------------------------------------------------- data
    def set_data(self, x, y, seed=None):
        """Splits (x, y) into `num_teachers` disjoint equal shards (`dlens_tf.data.partition`) and holds them."""
        x_parts, y_parts = partition(x, y, self.teachers.num_teachers, seed=seed)
        self.set_partitions(x_parts, y_parts)

    def set_partitions(self, x_parts, y_parts):
        """Holds teacher i's sensitive records x_parts[i] (uint8 0..255 or floats in [-1, 1]) and labels y_parts[i].

        Args:
          x_parts: array `[N, S, H, W, C]` or a list of N arrays `[S_i, H, W, C]` (S_i >= 1).
          y_parts: int labels `[N, S]` or a list of N arrays `[S_i]`, in [0, num_classes).
        """
        n = self.teachers.num_teachers
        if len(x_parts) != n or len(y_parts) != n:
            raise ValueError(f"Received an invalid value for `x_parts`, expected one partition per teacher ({n}). "
                             f"Received: {len(x_parts)} image partitions and {len(y_parts)} label partitions")
        xs, ys = [np.asarray(p) for p in x_parts], [np.asarray(p) for p in y_parts]
        for i, (xp, yp) in enumerate(zip(xs, ys)):
            if xp.ndim != 4 or tuple(xp.shape[1:]) != self.image_shape:
                raise ValueError(f"Received an invalid value for `x_parts`, expected records of shape "
                                 f"{self.image_shape} (the generator's image shape). Received: partition {i} "
                                 f"has shape {xp.shape}")
            if len(xp) == 0:
                raise ValueError(f"Received an invalid value for `x_parts`: partition {i} is empty; every teacher "
                                 f"needs at least one record (use fewer teachers than records)")
            if yp.shape != (len(xp),) or not np.issubdtype(yp.dtype, np.integer):
                raise ValueError(f"Received an invalid value for `y_parts`, expected one integer label per record "
                                 f"of partition {i} ({len(xp)}). Received: shape={yp.shape}, dtype={yp.dtype}")
            if yp.min() < 0 or yp.max() >= self.num_classes:
                raise ValueError(f"Received an invalid value for `y_parts`, expected labels in "
                                 f"[0, {self.num_classes}). Received: partition {i} has labels in "
                                 f"[{yp.min()}, {yp.max()}]")
            if xp.dtype != np.uint8 and (not np.issubdtype(xp.dtype, np.floating) or np.abs(xp).max() > 1.0):
                raise ValueError(f"Received an invalid value for `x_parts`, expected uint8 pixels or floats in "
                                 f"[-1, 1]. Received: partition {i} dtype={xp.dtype}")
        sizes = np.array([len(p) for p in xs], np.int32)
        padded_x = np.zeros((n, sizes.max()) + self.image_shape, np.float32)
        padded_y = np.zeros((n, sizes.max()), np.int32)
        for i, (xp, yp) in enumerate(zip(xs, ys)):
            padded_x[i, : len(xp)] = xp.astype(np.float32) / 127.5 - 1.0 if xp.dtype == np.uint8 else xp
            padded_y[i, : len(yp)] = yp
        self._partitions = (tf.constant(padded_x), tf.constant(padded_y), tf.constant(sizes))
        self.train_function = self._pretrain_function = None  # traced steps capture the partitions

    def _real_batches(self, seed, steps, pool=None):
        """Callable (start, stop) -> teachers [start, stop)'s real batches, m records each (`real_sampling`).

        With `pool` ([classes, m, H, W, C], record j of class c = G(z_j, c)) it also returns each teacher's
        label-matched fakes: fake j = pool[label of real record j, j].
        """
        x_all, y_all, sizes = self._partitions
        n = self.teachers.num_teachers
        if self.real_sampling == "replacement":
            u = rng.uniform([n, steps * self.batch_size], seed, stream=3)
            idx = tf.minimum(tf.cast(tf.floor(u * tf.cast(sizes[:, None], tf.float32)), tf.int32), sizes[:, None] - 1)
        else:  # a random order per teacher and update, padding last; the first m positions, cycling
            u = rng.uniform([n, steps, x_all.shape[1]], seed, stream=3)
            order = tf.argsort(tf.where(tf.range(x_all.shape[1]) < sizes[:, None, None], u, 2.0), axis=-1)
            position = tf.broadcast_to((tf.range(self.batch_size) % sizes[:, None])[:, None], [n, steps, self.batch_size])
            idx = tf.reshape(tf.gather(order, position, batch_dims=2), [n, steps * self.batch_size])

        def real_batches(start, stop):
            x = tf.gather(x_all[start:stop], idx[start:stop], batch_dims=1)
            y = tf.gather(y_all[start:stop], idx[start:stop], batch_dims=1)
            x = tf.reshape(x, [stop - start, steps, self.batch_size] + list(self.image_shape))
            y = tf.reshape(y, [stop - start, steps, self.batch_size])
            x, y = tf.transpose(x, [1, 0, 2, 3, 4, 5]), tf.transpose(y, [1, 0, 2])
            if pool is None:
                return x, y
            j = tf.broadcast_to(tf.range(self.batch_size), tf.shape(y))
            return x, y, tf.gather_nd(pool, tf.stack([tf.cast(y, tf.int32), j], -1)), y

        return real_batches

    def _require_partitions(self):
        if self._partitions is None:
            raise ValueError("DataLens has no sensitive data: call `set_data(x, y)` or `set_partitions(x_parts, "
                             "y_parts)` before training")

    # ------------------------------------------------------------------------------ training
    def _synthetic_batch(self, seed):
        z = rng.uniform([self.batch_size, self.generator.z_dim], seed, stream=1) * 2.0 - 1.0
        labels = tf.cast(tf.floor(rng.uniform([self.batch_size], seed, stream=2) * self.num_classes), tf.int32)
        labels = tf.minimum(labels, self.num_classes - 1)
        return z, labels, tf.one_hot(labels, self.num_classes)

    def _fake_pool(self, z):
        """None, or [classes, m, H, W, C] with record j of class c = G(z_j, c), for label-matched teacher fakes."""
        if not self.label_matched_fakes:
            return None
        c = self.num_classes
        y = tf.one_hot(tf.repeat(tf.range(c), self.batch_size), c)
        x = self.generator([tf.tile(z, [c, 1]), y], training=True)
        return tf.reshape(x, [c, self.batch_size] + list(self.image_shape))

    def _pretrain_step(self):
        seeds = self._rng.make_seeds(2)
        z, labels, y = self._synthetic_batch(seeds[:, 0])
        x = self.generator([z, y], training=True)
        loss, _ = self.teachers.train_and_image_gradients(self._real_batches(seeds[:, 1], 1, self._fake_pool(z)), x,
                                                          labels, 1, with_gradients=False)
        self.pretrained_steps.assign_add(1)
        return loss

    def pretrain_teachers(self, steps=None):
        """Runs teacher updates on the current generator's samples before generator training; no DP cost.

        Args:
          steps: number of updates; None runs what remains of `pretrain_steps`.

        Returns:
          the mean discriminator loss of the last update (None if no update ran).
        """
        self._require_partitions()
        if steps is None:
            steps = max(self.pretrain_steps - int(self.pretrained_steps.numpy()), 0)
        if self._pretrain_function is None:
            self._pretrain_function = tf.function(self._pretrain_step)
        loss = None
        for _ in range(steps):
            loss = self._pretrain_function()
        return loss

    def train_step(self, data):
        seeds = self._rng.make_seeds(2)
        z, labels, y = self._synthetic_batch(seeds[:, 0])
        pool = self._fake_pool(z)
        with tf.GradientTape() as tape:
            x = self.generator([z, y], training=True)
            with tape.stop_recording():
                d_loss, grads = self.teachers.train_and_image_gradients(
                    self._real_batches(seeds[:, 1], self.d_steps, pool), x, labels, self.d_steps)
                votes, direction = self._vote(grads)
                target = x + self.gamma * direction
            g_loss = tf.reduce_mean(tf.reduce_sum(tf.square(x - target), axis=[1, 2, 3]))
        variables = self.generator.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(g_loss, variables), variables))
        self.count_private_step()
        votes_kept = tf.reduce_mean(tf.cast(tf.math.count_nonzero(tf.reshape(votes, [self.batch_size, -1]), 1),
                                            tf.float32))
        return {"d_loss": d_loss, "g_loss": g_loss, "votes_kept": votes_kept}

    def _vote(self, grads):
        """TopAgg on [N, m, H, W, C] teacher gradients -> (votes on the voted coordinates, gbar [m, H, W, C])."""
        sigma = self.topagg.sigma if self.noise_schedule is None else self.noise_schedule(self.privacy_steps)
        votes, noisy = self._aggregate(self._pool(grads), sigma)
        direction = votes if self.vote_output == "sign" else noisy / sigma
        return votes, self._unpool(direction)

    def _pool(self, grads):
        """[N, m, H, W, C] -> [N, m, H/p, W/p, C]: means over p x p pixel blocks."""
        if self.vote_pool == 1:
            return grads
        p, (h, w, c) = self.vote_pool, self.vote_shape
        return tf.reduce_mean(tf.reshape(grads, [-1, self.batch_size, h, p, w, p, c]), axis=[3, 5])

    def _unpool(self, votes):
        """[m, H/p, W/p, C] -> [m, H, W, C]: each block's vote on all its pixels."""
        if self.vote_pool == 1:
            return votes
        return tf.repeat(tf.repeat(votes, self.vote_pool, axis=1), self.vote_pool, axis=2)

    def dp_event_per_step(self):
        """One generator step = `batch_size` TopAgg record-queries (without a noise schedule)."""
        if self.noise_schedule is not None:
            raise ValueError("Under a noise schedule the steps cost differently: use dp_event_of_steps(n).")
        return self.topagg.dp_event(self.batch_size)

    def dp_event_of_steps(self, num_steps):
        """Generator steps 0 .. num_steps - 1: `batch_size` TopAgg record-queries each, at each step's sigma."""
        if self.noise_schedule is None:
            return super().dp_event_of_steps(num_steps)
        return self.noise_schedule.dp_event(
            num_steps, lambda sigma: topagg_dp_event(self.topagg.k, sigma, self.batch_size))

    def compile(self, optimizer=None, **kwargs):
        """Keras compile; the default optimizer is Adam(learning_rate, beta_1) for the generator."""
        if optimizer is None:
            optimizer = keras.optimizers.Adam(self.learning_rate, beta_1=self.beta_1)
        kwargs.setdefault("jit_compile", False)  # the step calls its own XLA-compiled parts
        super().compile(optimizer=optimizer, **kwargs)

    def fit(self, x=None, y=None, **kwargs):
        """Keras fit on the held partitions: no data argument, `steps_per_epoch` required.

        Teacher pre-training (what remains of `pretrain_steps`) runs first.
        """
        if x is not None or y is not None:
            raise ValueError("DataLens.fit takes no data: give the sensitive data with `set_data` or "
                             "`set_partitions`, then call fit(steps_per_epoch=..., epochs=...)")
        if not kwargs.get("steps_per_epoch"):
            raise ValueError("Received an invalid value for `steps_per_epoch`, expected a positive integer "
                             f"(generator steps per epoch). Received: steps_per_epoch={kwargs.get('steps_per_epoch')!r}")
        self._require_partitions()
        self.pretrain_teachers()
        return super().fit(tf.data.Dataset.from_tensors(0).repeat(), **kwargs)

    def call(self, inputs, training=None):
        """G([z, y_onehot])."""
        return self.generator(inputs, training=training)

    def restore_checkpoint(self, save_path):
        """Restores a checkpoint written by `tf.train.Checkpoint(model=self)` one variable at a time.

        Same values as `tf.train.Checkpoint(model=self).restore(save_path)` (the generator optimizer's
        slots included, when it builds them), without holding the whole checkpoint in memory; raises
        ValueError if the checkpoint does not match. See `dlens_tf.models.checkpoints.restore_checkpoint`.
        """
        restore_checkpoint(tf.train.Checkpoint(model=self), save_path)

    # ---------------------------------------------------------------------------- sampling
    def generate(self, n, labels=None, batch_size=1000, seed=None):
        """Draws n synthetic records from the generator: see `Generator.sample`."""
        return self.generator.sample(n, labels=labels, batch_size=batch_size, seed=seed)

    def get_config(self):
        config = super().get_config()
        config.update(
            generator=keras.saving.serialize_keras_object(self.generator),
            teachers=keras.saving.serialize_keras_object(self.teachers),
            topagg=keras.saving.serialize_keras_object(self.topagg),
            batch_size=self.batch_size, gamma=self.gamma, d_steps=self.d_steps, pretrain_steps=self.pretrain_steps,
            learning_rate=self.learning_rate, beta_1=self.beta_1, label_matched_fakes=self.label_matched_fakes,
            real_sampling=self.real_sampling, vote_pool=self.vote_pool, vote_output=self.vote_output,
            noise_schedule=None if self.noise_schedule is None else keras.saving.serialize_keras_object(
                self.noise_schedule),
            seed=self.seed,
        )
        return config
