"""Tutorial 3: DP-SGD on any Keras model, with TopAgg or compressed updates, under a privacy budget.

Run: python3 tutorials/03_dp_sgd_with_compression.py   (DLENS_SMALL=1: a quick run on the digits)

Steps:
  1. pick the budget and calibrate the noise multiplier z for it;
  2. wrap a plain Keras model with `make_private` (per-example clipping + a mechanism);
  3. feed Poisson-sampled batches (what the accountant assumes) and fit under PrivacyBudget;
  4. swap the mechanism: TopAgg-SGD, top-k with the noise after or before compression.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from tensorflow import keras  # noqa: E402

import dlens_tf  # noqa: E402
from dlens_tf import data  # noqa: E402
from dlens_tf.models import make_private  # noqa: E402
from dlens_tf.experiments.dpsgd import small_cnn  # noqa: E402
from dlens_tf.privacy.calibration import calibrate_noise_multiplier  # noqa: E402
from dlens_tf.privacy.sampling import private_batches  # noqa: E402

SMALL = os.environ.get("DLENS_SMALL") == "1"
DATASET, EPOCHS, BATCH = ("digits", 3, 64) if SMALL else ("mnist", 2, 256)
EPSILON, DELTA = 2.0, 1e-5

(x, y), (x_test, y_test) = data.load(DATASET)
x, x_test = data.to_float(x), data.to_float(x_test)

# 1. Noise for the budget: epsilon of EPOCHS epochs of Poisson-sampled DP-SGD lands in [0.99, 1] x target.
z = calibrate_noise_multiplier(EPSILON, DELTA, epochs=EPOCHS, batch_size=BATCH, num_examples=len(x))
print(f"noise multiplier z={z:.3f} for epsilon={EPSILON}, delta={DELTA}")

for mechanism, options, lr in [
    ("gaussian", {}, 0.5),                                      # 2. standard DP-SGD
    ("topagg", {"rate": 0.01, "beta": 0.0}, 0.03),              # 4. TopAgg-SGD: the update is a {-1,0,1} vote times lr
    ("topk", {"rate": 0.1, "noise_placement": "after"}, 0.5),   #    compress the noisy mean (post-processing)
    ("topk", {"rate": 0.1, "noise_placement": "before"}, 0.5),  #    compress each example first (sensitivity still C)
]:
    model = make_private(small_cnn(x.shape[1:]), mechanism=mechanism, l2_norm_clip=1.0, noise_multiplier=z,
                         batch_size=BATCH, num_examples=len(x), seed=0, **options)
    model.compile(keras.optimizers.SGD(lr), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    budget = dlens_tf.PrivacyBudget(EPSILON, DELTA)  # 3. stops before the step that would pass epsilon
    model.fit(private_batches(x, y, BATCH, seed=0), epochs=EPOCHS, verbose=0, callbacks=[budget])
    steps = int(model.privacy_steps.numpy())
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    print(f"{mechanism:8s} {options}: {steps} steps, epsilon={budget.epsilon_after(steps):.3f}, "
          f"test accuracy={accuracy:.3f}, event per step: {model.dp_event_per_step()}")
    assert budget.epsilon_after(steps) <= EPSILON and np.isfinite(accuracy)
