"""Training-step time of DP-SGD on a small MNIST CNN, batch 256: ours against non-private Keras and TF Privacy.

  python3 benchmarks/dpsgd.py [--steps=20] [--tfp_steps=3]

One run times, on the same model and batch: a non-private Keras step; our DPModel step
(gaussian, true per-example clipping); TF Privacy's VectorizedDPKerasSGDOptimizer and
DPKerasSGDOptimizer with one microbatch per example (num_microbatches = 256). Steps are
timed one by one after a warm-up and the median is reported (robust on a shared CPU).
Last line: `dpsgd overhead_vs_nonprivate=<ours / non-private> speedup_vs_tfprivacy_best=<best TF Privacy / ours>`.
"""

import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_privacy as tfp  # noqa: E402
from absl import app, flags  # noqa: E402
from tensorflow import keras  # noqa: E402

from dlens_tf.models import make_private  # noqa: E402
from dlens_tf.experiments.dpsgd import small_cnn  # noqa: E402

flags.DEFINE_integer("steps", 20, "Timed steps of the fast variants (non-private, ours).")
flags.DEFINE_integer("tfp_steps", 3, "Timed steps of each TF Privacy optimizer (slow).")
flags.DEFINE_integer("batch_size", 256, "Batch size (one microbatch per example for TF Privacy).")
FLAGS = flags.FLAGS


def median_step_seconds(step, steps):
    step()  # trace / compile
    step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv):
    del argv
    b = FLAGS.batch_size
    rng = np.random.default_rng(0)
    x = rng.random((b, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, b)

    def loss(reduction="auto"):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)

    plain = small_cnn((28, 28, 1))
    plain.compile(keras.optimizers.SGD(0.1), loss=loss())
    results = {"non-private Keras": median_step_seconds(lambda: plain.train_on_batch(x, y), FLAGS.steps)}

    ours = make_private(small_cnn((28, 28, 1)), "gaussian", l2_norm_clip=1.0, noise_multiplier=1.0,
                        batch_size=b, num_examples=60000, seed=0)
    ours.compile(keras.optimizers.SGD(0.1), loss=loss())
    results["dlens_tf DPModel (gaussian)"] = median_step_seconds(lambda: ours.train_on_batch(x, y), FLAGS.steps)

    for name, optimizer_class in [("TF Privacy VectorizedDPKerasSGDOptimizer", tfp.VectorizedDPKerasSGDOptimizer),
                                  ("TF Privacy DPKerasSGDOptimizer", tfp.DPKerasSGDOptimizer)]:
        model = small_cnn((28, 28, 1))
        model.compile(optimizer_class(l2_norm_clip=1.0, noise_multiplier=1.0, num_microbatches=b, learning_rate=0.1),
                      loss=loss(tf.losses.Reduction.NONE))
        results[name] = median_step_seconds(lambda m=model: m.train_on_batch(x, y), FLAGS.tfp_steps)

    for name, seconds in results.items():
        print(f"{name:45s} {seconds * 1000:10.1f} ms/step")
    mine = results["dlens_tf DPModel (gaussian)"]
    tfp_best = min(results["TF Privacy VectorizedDPKerasSGDOptimizer"], results["TF Privacy DPKerasSGDOptimizer"])
    print(f"dpsgd overhead_vs_nonprivate={mine / results['non-private Keras']:.2f} speedup_vs_tfprivacy_best={tfp_best / mine:.1f}")


if __name__ == "__main__":
    app.run(main)
