"""One generator step's teacher work: vectorised TeacherEnsemble vs a loop of per-teacher Keras models.

Teacher work = `d_steps` discriminator updates (m real + m fake records each) plus the image gradients
of m synthetic records, for N paper-size MNIST discriminators. The loop baseline times
`--loop_teachers` separate Keras models (one tf.function each, Adam) and scales to N. The ensemble's
achieved GFLOP/s (multiply-adds it executes, x2) is compared with a 2048^3 float32 matmul measured in
the same run, before and after the ensemble (the faster of the two). The ensemble's time is the median of
`--timed_steps` generator steps after a first one that compiles. Last line:
teachers speedup_vs_loop=<x> fraction_of_matmul_flops=<y> peak_rss_gb=<z>
"""

import resource
import time

import dlens_tf  # noqa: F401  first: it turns on TF's oneDNN kernels, which must happen before TensorFlow loads

import numpy as np
import tensorflow as tf
from absl import app, flags
from tensorflow import keras

from dlens_tf.models.teachers import (CONVOLUTIONS, IMAGE_GRADIENT_DTYPES, TeacherEnsemble, build_discriminator,
                                      default_widths)

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_teachers", 4000, "Teachers N.")
flags.DEFINE_integer("batch", 15, "Records m per teacher batch and synthetic batch (the paper's effective "
                     "batch: one partition, 60000 / 4000 = 15 records).")
flags.DEFINE_integer("d_steps", 2, "Discriminator updates per generator step.")
flags.DEFINE_integer("partition_size", 15, "Records per teacher partition (60000 / 4000 for MNIST).")
flags.DEFINE_integer("loop_teachers", 20, "Per-teacher Keras models timed for the loop baseline.")
flags.DEFINE_integer("chunk_size", 125, "Teachers per shard of the ensemble.")
flags.DEFINE_integer("timed_steps", 3, "Generator steps timed after the first (their median is the ensemble's time).",
                     lower_bound=1)
flags.DEFINE_enum("weight_dtype", "bfloat16", ["bfloat16", "float32"], "Ensemble weight storage.")
flags.DEFINE_enum("convolution", "auto", list(CONVOLUTIONS), "Ensemble convolutions (see TeacherEnsemble).")
flags.DEFINE_enum("image_gradient_dtype", "float32", list(IMAGE_GRADIENT_DTYPES),
                  "Arithmetic of the ensemble's image gradients (see TeacherEnsemble); the presets' is float32.")

SHAPE, CLASSES = (28, 28, 1), 10


def _peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def _forward_flops(batch, widths, executed):
    """FLOPs of one forward pass of one teacher on `batch` records (executed: label channels folded)."""
    (_, _, c), y = SHAPE, CLASSES
    f1, f2, units = widths
    p1, p2 = 14 * 14, 7 * 7
    if executed:
        conv = (2 * batch * p1 * 25 * c * f1 + 2 * y * p1 * 25 * f1 + 2 * batch * y * p1 * f1
                + 2 * batch * p2 * 25 * f1 * f2 + 2 * y * p2 * 25 * f2 + 2 * batch * y * p2 * f2)
    else:
        conv = 2 * batch * (p1 * 25 * (c + y) * f1 + p2 * 25 * (f1 + y) * f2)
    return conv + 2 * batch * ((p2 * f2 + y) * units + units + y)


def _step_flops(m, d_steps, widths, executed):
    """Training pass = 3x forward on 2m records per update; image gradients = 2x forward on m records."""
    return d_steps * 3 * _forward_flops(2 * m, widths, executed) + 2 * _forward_flops(m, widths, executed)


def _matmul_gflops():
    a, b = tf.random.normal([2048, 2048]), tf.random.normal([2048, 2048])
    f = tf.function(tf.matmul)
    f(a, b).numpy()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        f(a, b).numpy()
        times.append(time.perf_counter() - start)
    return 2 * 2048**3 / np.median(times) / 1e9


def _loop_seconds_per_teacher(real_x, real_y, fake_x, fake_y, m, d_steps):
    times = []
    y_fake = tf.one_hot(fake_y, CLASSES)
    for i in range(FLAGS.loop_teachers):
        model = build_discriminator(SHAPE, CLASSES, name=f"teacher{i}")
        optimizer = keras.optimizers.Adam(1e-3, beta_1=0.5)
        x_i, y_i = real_x[i], tf.one_hot(real_y[i], CLASSES)

        @tf.function
        def work():
            for s in range(d_steps):
                with tf.GradientTape() as tape:
                    real = model([x_i[s * m:(s + 1) * m], y_i[s * m:(s + 1) * m]])
                    fake = model([fake_x, y_fake])
                    loss = tf.reduce_mean(tf.nn.softplus(-real)) + tf.reduce_mean(tf.nn.softplus(fake))
                optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                              model.trainable_variables))
            x = tf.identity(fake_x)
            with tf.GradientTape() as tape:
                tape.watch(x)
                g_loss = tf.reduce_mean(tf.nn.softplus(-model([x, y_fake])))
            return -tape.gradient(g_loss, x)

        work().numpy()  # trace and build the optimizer
        start = time.perf_counter()
        work().numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(_):
    n, m, d_steps = FLAGS.num_teachers, FLAGS.batch, FLAGS.d_steps
    widths = default_widths(SHAPE, CLASSES)
    rng = np.random.default_rng(0)
    data = tf.constant(rng.uniform(-1, 1, (n, FLAGS.partition_size) + SHAPE).astype(np.float32))
    labels = tf.constant(rng.integers(0, CLASSES, (n, FLAGS.partition_size)))
    fake_x = tf.constant(rng.uniform(-1, 1, (m,) + SHAPE).astype(np.float32))
    fake_y = tf.constant(rng.integers(0, CLASSES, m))
    idx = np.arange(d_steps * m) % FLAGS.partition_size  # each teacher cycles through its partition

    loop_x = tf.gather(data[: FLAGS.loop_teachers], idx, axis=1)
    loop_y = tf.gather(labels[: FLAGS.loop_teachers], idx, axis=1)
    loop_per_teacher = _loop_seconds_per_teacher(loop_x, loop_y, fake_x, fake_y, m, d_steps)
    loop_seconds = loop_per_teacher * n
    print(f"loop: {loop_per_teacher * 1e3:.1f} ms per teacher -> {loop_seconds:.1f} s for {n} teachers "
          f"(timed {FLAGS.loop_teachers})", flush=True)

    matmul = _matmul_gflops()
    print(f"matmul 2048^3 float32: {matmul:.1f} GFLOP/s", flush=True)

    ensemble = TeacherEnsemble(n, SHAPE, CLASSES, chunk_size=FLAGS.chunk_size, weight_dtype=FLAGS.weight_dtype,
                               convolution=FLAGS.convolution, image_gradient_dtype=FLAGS.image_gradient_dtype, seed=0)
    print(f"ensemble: {ensemble.num_parameters() / 1e9:.2f}e9 parameters, {len(ensemble.shards)} shards, "
          f"{ensemble.convolution_in_use} convolutions, {ensemble.image_gradient_dtype} image gradients, "
          f"rss {_peak_rss_gb():.1f} GB", flush=True)

    def real_batches(start, stop):
        x = tf.gather(data[start:stop], idx, axis=1)
        y = tf.gather(labels[start:stop], idx, axis=1)
        x = tf.reshape(x, [stop - start, d_steps, m] + list(SHAPE))
        return tf.transpose(x, [1, 0, 2, 3, 4, 5]), tf.transpose(tf.reshape(y, [stop - start, d_steps, m]), [1, 0, 2])

    step = tf.function(lambda: ensemble.train_and_image_gradients(real_batches, fake_x, fake_y, d_steps))
    start = time.perf_counter()
    step()[1].numpy()  # includes tracing and XLA compilation
    print(f"ensemble first step (with compilation): {time.perf_counter() - start:.1f} s", flush=True)
    times = []
    for _ in range(FLAGS.timed_steps):
        start = time.perf_counter()
        loss, grads = step()
        grads.numpy()
        times.append(time.perf_counter() - start)
        assert grads.shape == (n, m) + SHAPE and np.isfinite(float(loss))
    ensemble_seconds = float(np.median(times))
    print(f"ensemble steps: {', '.join(f'{t:.1f}' for t in times)} s", flush=True)

    matmul_after = _matmul_gflops()
    print(f"matmul 2048^3 float32 after the ensemble: {matmul_after:.1f} GFLOP/s", flush=True)
    matmul = max(matmul, matmul_after)  # the machine's quieter moment: a loaded one would inflate the fraction
    executed = _step_flops(m, d_steps, widths, executed=True) * n
    nominal = _step_flops(m, d_steps, widths, executed=False) * n
    achieved = executed / ensemble_seconds / 1e9
    print(f"ensemble: {ensemble_seconds:.1f} s per generator step ({ensemble_seconds / n * 1e3:.2f} ms per teacher); "
          f"{achieved:.1f} GFLOP/s executed, {nominal / ensemble_seconds / 1e9:.1f} GFLOP/s of the paper "
          f"architecture's nominal FLOPs", flush=True)
    print(f"teachers speedup_vs_loop={loop_seconds / ensemble_seconds:.2f} "
          f"fraction_of_matmul_flops={achieved / matmul:.2f} peak_rss_gb={_peak_rss_gb():.1f}")


if __name__ == "__main__":
    app.run(main)
