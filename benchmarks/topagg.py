"""TopAgg at MNIST scale: dlens_tf vs a per-record numpy loop vs one plain sum.

Gradients [4000 teachers, 30 records, 784] float32, k = 200. Times are medians of a few
repetitions after one warm-up (compilation excluded). The last line reads
`topagg speedup_vs_numpy_loop=<x> slowdown_vs_plain_sum=<y>`.

Run: python3 benchmarks/topagg.py [--reps 5]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from dlens_tf.privacy.topagg import TopAgg  # noqa: E402

TEACHERS, RECORDS, DIM, K, SIGMA, BETA = 4000, 30, 784, 200, 100.0, 0.1


def numpy_topagg(gradients, k, sigma, beta, rng):
    """Reference loop over records: argpartition top-k, stochastic sign, sum, noise, vote."""
    teachers, records, dim = gradients.shape
    votes = np.empty((records, dim), np.float32)
    rows = np.arange(teachers)[:, None]
    for j in range(records):
        g = gradients[:, j, :]
        mag = np.abs(g)
        mag[np.isnan(mag)] = 0.0
        idx = np.argpartition(-mag, k - 1, axis=1)[:, :k]
        kept = np.nan_to_num(g[rows, idx], nan=0.0)
        b = np.abs(kept).max(axis=1, keepdims=True)
        b = np.where(b > 0, b, 1.0)
        prob = (1.0 + np.clip(kept / b, -1.0, 1.0)) / 2.0
        signs = np.where(rng.random(kept.shape) < prob, 1.0, -1.0).astype(np.float32)
        total = np.zeros((teachers, dim), np.float32)
        total[rows, idx] = signs
        noisy = total.sum(axis=0) + rng.normal(0.0, sigma, dim)
        votes[j] = np.where(np.abs(noisy) > beta * teachers, np.sign(noisy), 0.0)
    return votes


def median_time(fn, reps, warmup=True):
    if warmup:
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions of the TensorFlow paths")
    parser.add_argument("--numpy_reps", type=int, default=1, help="timed repetitions of the numpy loop")
    args = parser.parse_args()

    g_np = np.random.default_rng(0).standard_normal((TEACHERS, RECORDS, DIM), dtype=np.float32)
    g = tf.constant(g_np)

    rng = np.random.default_rng(1)
    t_numpy = median_time(lambda: numpy_topagg(g_np, K, SIGMA, BETA, rng), args.numpy_reps, warmup=False)

    layer = TopAgg(k=K, sigma=SIGMA, beta=BETA, seed=0)
    aggregate = tf.function(layer.aggregate, jit_compile=True)
    t_topagg = median_time(lambda: aggregate(g)[0].numpy(), args.reps)

    t_sum = median_time(lambda: tf.reduce_sum(g).numpy(), args.reps)
    t_sum_teachers = median_time(lambda: tf.reduce_sum(g, axis=0).numpy(), args.reps)

    print(f"numpy per-record loop: {t_numpy * 1e3:9.1f} ms")
    print(f"dlens_tf TopAgg (XLA): {t_topagg * 1e3:9.1f} ms")
    print(f"plain tf.reduce_sum:   {t_sum * 1e3:9.1f} ms (over teachers only: {t_sum_teachers * 1e3:.1f} ms)")
    print(f"topagg speedup_vs_numpy_loop={t_numpy / t_topagg:.2f} slowdown_vs_plain_sum={t_topagg / t_sum:.2f}")


if __name__ == "__main__":
    main()
