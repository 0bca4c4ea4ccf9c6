"""A preset's DataLens run at small scale and the same signal-to-noise ratio: a fast tuning proxy.

Whether TopAgg keeps a coordinate, and with which sign, depends on the teachers' clean vote over
sigma: with N teachers of the preset's partition size, noise sigma * N / N_preset and threshold
beta * N, a coordinate on which a given share of teachers agree has the same odds as in the full
run. This app trains such a proxy (default 100 teachers instead of 4000: about 40x less work) for
the number of generator steps the full preset's budget allows, and every --eval_every steps prints
the samples' fidelity: the share of samples that a classifier trained on the real training set
assigns to the label they were generated for (chance: 1 / classes), with the losses and votes kept.
With --ema_momentum it also scores exponential moving averages of the generator's weights
(post-processing of the generator's iterates, so no privacy cost; training is unchanged).

A tuning tool, not a private run: the proxy's noise is smaller in absolute terms, so its own epsilon
is larger than the preset's, and nothing is saved. Preset flags (--topk, --sigma, ...) set the full
run's values; the step count follows from them and the budget.

  python3 apps/datalens_proxy.py --preset=mnist_eps1
  python3 apps/datalens_proxy.py --preset=mnist_eps1 --d_steps=1
"""

import contextlib
import time

import dlens_tf  # noqa: F401  first: it turns on TF's oneDNN kernels, which must happen before TensorFlow loads

import numpy as np
from absl import app, flags
from tensorflow import keras

from dlens_tf import data
from dlens_tf.data.scaling import to_float, to_uint8
from dlens_tf.evaluation import utility_classifier
from dlens_tf.presets import PRESETS, get_preset
from dlens_tf.privacy import TopAgg
from dlens_tf.privacy.accountant import PrivacyAccountant

import _cli  # apps/_cli.py

flags.DEFINE_enum("preset", "mnist_eps1", sorted(PRESETS), "Full-scale hyper-parameter set the proxy stands for.")
flags.DEFINE_integer("proxy_teachers", 100, "Teachers of the proxy, each with the preset's partition size.")
flags.DEFINE_integer("steps", None, "Generator steps (default: what the preset's budget allows at full scale).")
flags.DEFINE_integer("eval_every", 50, "Generator steps between fidelity measurements.")
flags.DEFINE_integer("samples", 1000, "Samples per fidelity measurement.")
flags.DEFINE_integer("seed", 0, "Seed of the weights, the partition, the noise, the samples and the classifier.")
flags.DEFINE_list("ema_momentum", [], "Also score moving averages of the generator's weights (batch-norm statistics "
                  "included), average <- m * average + (1 - m) * weights after every step, for each m in [0, 1).")
_cli.define_preset_flags()
FLAGS = flags.FLAGS


@contextlib.contextmanager
def _restored(weights):
    """Puts `weights` back to their current values on exit."""
    saved = [w.numpy() for w in weights]
    try:
        yield
    finally:
        for w, value in zip(weights, saved):
            w.assign(value)


class _Fidelity(keras.callbacks.Callback):
    """Prints the samples' fidelity every `every` generator steps (one step per Keras epoch) and at the end,
    also for moving averages of the generator's weights with the momenta `ema_momenta`."""

    def __init__(self, scorer, every, samples, seed, start, ema_momenta=()):
        super().__init__()
        self.scorer, self.every, self.samples, self.seed, self.start = scorer, every, samples, seed, start
        self.ema_momenta, self.averages = tuple(ema_momenta), {}
        self.last = None

    def on_train_begin(self, logs=None):
        self.averages = {m: [w.numpy() for w in self.model.generator.weights] for m in self.ema_momenta}

    def on_train_batch_end(self, batch, logs=None):
        if not self.averages:
            return
        weights = [w.numpy() for w in self.model.generator.weights]
        for m, average in self.averages.items():
            for a, w in zip(average, weights):
                a *= m
                a += (1.0 - m) * w

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + 1
        if step % self.every and step != self.params["epochs"]:
            return
        self.last = self._score(*self.model.generate(self.samples, seed=self.seed))
        averaged = "".join(f" ema{m:g}={self._score_average(m):.3f}" for m in self.ema_momenta)
        print(f"step {step}: fidelity={self.last:.3f} (batch statistics: {self._score_batch_statistics():.3f}) "
              f"d_loss={logs['d_loss']:.3f} votes_kept={logs['votes_kept']:.1f}{averaged} "
              f"({time.time() - self.start:.0f} s)", flush=True)

    def _score_average(self, momentum):
        """Fidelity of the generator with the moving average of its weights for `momentum`; weights restored."""
        weights = self.model.generator.weights
        with _restored(weights):
            for w, a in zip(weights, self.averages[momentum]):
                w.assign(a)
            return self._score(*self.model.generate(self.samples, seed=self.seed))

    def _score(self, x, y):
        return float(np.mean(np.argmax(self.scorer.predict(to_float(x), verbose=0), 1) == y))

    def _score_batch_statistics(self):
        """Fidelity of samples drawn as the official code draws them: batch normalisation in training mode,
        batches of `batch_size` records with random labels (the moving averages are left untouched)."""
        generator, m = self.model.generator, self.model.batch_size
        r = np.random.default_rng(self.seed)
        x, y = [], []
        with _restored(generator.non_trainable_weights):
            for _ in range(-(-self.samples // m)):
                labels = r.integers(0, generator.num_classes, m)
                z = r.uniform(-1.0, 1.0, (m, generator.z_dim)).astype(np.float32)
                x.append(to_uint8(generator([z, np.eye(generator.num_classes, dtype=np.float32)[labels]],
                                            training=True).numpy()))
                y.append(labels)
        return self._score(np.concatenate(x), np.concatenate(y))


def main(_):
    start = time.time()
    full = get_preset(FLAGS.preset).replace(**_cli.preset_overrides())
    (x, y), _ = data.load(full.dataset)
    per_teacher = len(x) // full.num_teachers
    n = FLAGS.proxy_teachers
    if n < 1 or n > full.num_teachers:
        raise app.UsageError(f"--proxy_teachers: expected 1 to {full.num_teachers} (the preset's teachers). "
                             f"Received: {n}")
    if FLAGS.eval_every < 1 or FLAGS.samples < 1 or (FLAGS.steps is not None and FLAGS.steps < 1):
        raise app.UsageError("--eval_every, --samples and --steps: expected positive integers.")
    try:
        momenta = [float(m) for m in FLAGS.ema_momentum]
        valid = all(0.0 <= m < 1.0 for m in momenta)
    except ValueError:
        valid = False
    if not valid:
        raise app.UsageError(f"--ema_momentum: expected numbers in [0, 1). Received: {FLAGS.ema_momentum}")
    topagg = TopAgg(full.topk, full.sigma, full.beta, clip=full.clip)
    schedule = full.noise_schedule()
    if FLAGS.steps is not None:
        steps = FLAGS.steps
    elif schedule is not None:
        steps = schedule.steps
    else:
        steps = PrivacyAccountant(full.accountant).max_compositions(topagg.dp_event(full.batch_size), full.epsilon,
                                                                    full.delta)
    scale = n / full.num_teachers
    proxy = full.replace(num_teachers=n, sigma=full.sigma * scale)
    if schedule is not None:
        proxy = proxy.replace(sigma_end=full.sigma_end * scale, ramp_steps=schedule.steps)
    # sigma / N is the proxy's as the full run's, so noise alone keeps as many coordinates.
    noise_floor = topagg.noise_only_keep_rate(full.num_teachers) * np.prod(x.shape[1:]) / full.vote_pool ** 2
    print(f"{FLAGS.preset} proxy: {n} teachers x {per_teacher} records, sigma {proxy.sigma:g} (full: "
          f"{full.num_teachers} x {per_teacher}, sigma {full.sigma:g}"
          f"{'' if schedule is None else f' to {full.sigma_end:g} over {schedule.steps} steps'}), k={full.topk}, "
          f"beta={full.beta}, "
          f"{steps} generator steps; noise alone keeps {noise_floor:.0f} coordinates per record", flush=True)

    keras.utils.set_random_seed(FLAGS.seed)
    scorer = utility_classifier(x.shape[1:], int(y.max()) + 1, seed=FLAGS.seed)
    scorer.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    scorer.fit(to_float(x), y, batch_size=256, epochs=2, verbose=0)
    model = proxy.build(x.shape[1:], int(y.max()) + 1, seed=FLAGS.seed)
    records = np.random.default_rng(FLAGS.seed).permutation(len(x))[: n * per_teacher]
    model.set_data(x[records], y[records], seed=FLAGS.seed)
    fidelity = _Fidelity(scorer, FLAGS.eval_every, FLAGS.samples, FLAGS.seed, start, momenta)
    model.fit(steps_per_epoch=1, epochs=steps, verbose=0, callbacks=[fidelity])
    print(f"proxy fidelity={fidelity.last:.3f}")


if __name__ == "__main__":
    _cli.run(main)
