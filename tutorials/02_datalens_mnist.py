"""Tutorial 2: differentially private synthetic MNIST with DataLens, step by step.

Run: python tutorials/02_datalens_mnist.py            (about 15 minutes on a 2-core AVX-512 CPU, 37 on AVX2: the mnist_quick run)
     DLENS_SMALL=1 python tutorials/02_datalens_mnist.py  (the test suite's 1-minute version)

Outputs go to $DLENS_OUTPUT_DIR (default runs/tutorial02): samples.png and the printed figures.
The full-size values are those of the app's mnist_quick preset (600 teachers, k=200, sigma=400,
beta=0.3, batch 15, eps=20 under the tight accountant: 158 generator steps); that preset's recorded
run is results/datalens_mnist_quick.json.
For the paper's settings, use the app: python apps/train_datalens.py --preset=mnist_eps1
"""

import os
import pathlib


import dlens_tf
from dlens_tf import data
from dlens_tf.evaluation import evaluate_synthetic, filter_by_own_label, save_image_grid
from dlens_tf.models import DataLens, Generator, TeacherEnsemble

SMALL = os.environ.get("DLENS_SMALL") == "1"
OUT = pathlib.Path(os.environ.get("DLENS_OUTPUT_DIR", "runs/tutorial02"))
OUT.mkdir(parents=True, exist_ok=True)

# Step 1. The sensitive data: MNIST, loaded offline. DataLens splits it into disjoint, equal
# shards, one per teacher; changing one record changes one teacher's shard only.
(x_train, y_train), (x_test, y_test) = data.load("mnist")
num_teachers = 20 if SMALL else 600
if SMALL:
    x_train, y_train = x_train[:2000], y_train[:2000]
print(f"{len(x_train)} sensitive records, {num_teachers} teachers of {len(x_train) // num_teachers} records each")

# Step 2. The three parts: N teacher discriminators held as ONE stacked, vectorised model; a
# conditional generator that never sees real data; and TopAgg, the only DP mechanism. Each
# teacher keeps its top-k image-gradient coordinates as signs; the noisy vote sum is
# thresholded at beta * N.
teachers = TeacherEnsemble(num_teachers, image_shape=(28, 28, 1), num_classes=10,
                           widths=(16, 32, 64) if SMALL else None, seed=0)
generator = Generator(z_dim=50, num_classes=10, image_shape=(28, 28, 1),
                      dense_units=256 if SMALL else 1024, filters=32 if SMALL else 128)
topagg = dlens_tf.TopAgg(k=50 if SMALL else 200, sigma=100.0 if SMALL else 400.0, beta=0.2 if SMALL else 0.3,
                         clip=None if SMALL else 1e-5)

# Step 3. The DataLens model. One train_step is one generator step of Algorithm 1: teachers
# update on (their own real batch, the synthetic batch), send their image gradients through
# TopAgg, and the generator moves its records along the voted signs. Each synthetic record
# is one TopAgg query, so one step costs topagg.dp_event(batch_size).
model = DataLens(generator, teachers, topagg, batch_size=30 if SMALL else 15, pretrain_steps=10, seed=0)
model.compile()
model.set_data(x_train, y_train, seed=0)
print("one step =", model.dp_event_per_step())

# Step 4. Train under a budget. PrivacyBudget computes up front how many steps fit, logs
# epsilon into the Keras logs, and stops fit() before the step that would pass the budget.
budget = dlens_tf.PrivacyBudget(epsilon=10.0 if SMALL else 20.0, delta=1e-5, accountant="pld")
model.fit(steps_per_epoch=10, epochs=1 if SMALL else 16, verbose=0 if SMALL else 2, callbacks=[budget])
spent = budget.history[-1][1]
print(f"generator steps: {int(model.privacy_steps.numpy())} (budget allows {budget.max_steps}), "
      f"epsilon spent: {spent:.3f} (delta 1e-5)")

# Step 5. Release: synthetic records are post-processing of the DP generator, free of further
# privacy cost. Look at them, then measure utility: train a classifier on synthetic records
# only and test it on the real test set.
x_syn, y_syn = model.generate(1000 if SMALL else 20000, seed=0)
save_image_grid(OUT / "samples.png", x_syn, y_syn)
result = evaluate_synthetic(x_syn, y_syn, x_test, y_test, epochs=2 if SMALL else 20, seed=0)
print(f"utility (real test accuracy of a classifier trained on synthetic data): "
      f"honest {result.honest_accuracy:.4f}, paper protocol (max over epochs) {result.max_test_accuracy:.4f}")

# Step 6 (optional). Post-processing may also choose records: a classifier trained on the
# synthetic records scores each one by the probability of its own label, and keeping the
# best-scoring share of each class drops many that look like another class or like none. Only
# synthetic data is used, so it costs no privacy (apps: --filter_keep_fraction).
kept = filter_by_own_label(x_syn, y_syn, keep_fraction=0.7, seed=0)
filtered = evaluate_synthetic(x_syn[kept], y_syn[kept], x_test, y_test, epochs=2 if SMALL else 20, seed=0)
print(f"own-label filter kept {len(kept)} of {len(x_syn)} records: honest {filtered.honest_accuracy:.4f}, "
      f"paper protocol {filtered.max_test_accuracy:.4f}")
print(f"sample grid: {OUT / 'samples.png'}; epsilon spent {spent:.3f}")
