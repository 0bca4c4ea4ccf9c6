"""Tutorial 1: TopAgg and the privacy budget, step by step.

Run: python tutorials/01_topagg_and_budget.py  (about a minute on a 2-core CPU)

We (1) compress one gradient with TopkStoSignGrad, (2) let 200 simulated teachers vote
with TopAgg and see the consensus survive the noise, (3) ask the accountants how many
votes a budget buys, and (4) train a small model with TopAgg as its aggregation step
under `PrivacyBudget`, which stops `model.fit` before the budget would be exceeded.
"""

import numpy as np
import tensorflow as tf

import dlens_tf
from dlens_tf.compression import topk_stochastic_sign
from dlens_tf.models import PrivateModel

tf.random.set_seed(0)
rng = np.random.default_rng(0)

# Step 1. TopkStoSignGrad keeps the k largest-magnitude entries of a vector and replaces each
# by a random sign whose mean is the entry divided by the largest kept magnitude.
g = tf.constant([[0.9, -0.1, 0.05, -0.7, 0.3, 0.0]])
print("gradient          :", g.numpy()[0])
print("top-3 signs       :", topk_stochastic_sign(g, k=3, seed=tf.constant([1, 2])).numpy()[0])
draws = tf.concat([topk_stochastic_sign(g, k=3, seed=tf.constant([i, 0])) for i in range(2000)], 0)
print("mean of 2000 draws:", np.round(draws.numpy().mean(0), 2), "(~ g / 0.9 on the kept entries)")

# Step 2. 200 teachers hold noisy views of the same direction; TopAgg compresses each to k signs,
# sums them, adds N(0, sigma^2) and keeps the coordinates with |sum| > beta * teachers.
truth = np.zeros(50, np.float32)
truth[:5] = [3, -3, 2, -2, 1]
teacher_grads = truth + rng.normal(scale=0.5, size=(200, 1, 50)).astype(np.float32)
topagg = dlens_tf.TopAgg(k=5, sigma=20.0, beta=0.3, seed=0)
votes = topagg(teacher_grads).numpy()[0]
print("voted coordinates :", np.flatnonzero(votes), "signs", votes[votes != 0])

# Step 3. Each record aggregated is one Gaussian query with noise multiplier sigma / (2 sqrt(k)).
# The paper's MNIST setting (k=200, sigma=5000) at eps=1, delta=1e-5:
paper_query = dlens_tf.privacy.topagg_dp_event(k=200, sigma=5000.0, num_queries=1)
for kind in ("rdp", "pld"):
    n = dlens_tf.PrivacyAccountant(kind).max_compositions(paper_query, epsilon=1.0, delta=1e-5)
    print(f"{kind}: eps=1 buys {n} record-queries")


# Step 4. A private model: N data shards ("teachers") each compute a gradient of a linear model;
# TopAgg turns them into one sign vote; the model steps along it. Its DP event per step is
# TopAgg's, and PrivacyBudget stops fit() before the budget runs out.
class TopAggRegression(PrivateModel):
    def __init__(self, shards_x, shards_y, topagg, step_size=0.02):
        super().__init__()
        self.shards_x, self.shards_y = tf.constant(shards_x), tf.constant(shards_y)
        self.topagg, self.step_size = topagg, step_size
        self.w = tf.Variable(tf.zeros([shards_x.shape[-1]]), name="w")

    def call(self, x):
        return tf.linalg.matvec(x, self.w)

    def dp_event_per_step(self):
        return self.topagg.dp_event(1)  # one aggregated vector per step

    def train_step(self, data):
        with tf.GradientTape() as tape:
            tape.watch(self.w)
            residual = tf.einsum("nbd,d->nb", self.shards_x, self.w) - self.shards_y
            per_shard_loss = tf.reduce_mean(residual**2, axis=1)  # [N]: one loss per teacher
        per_shard_grad = tape.jacobian(per_shard_loss, self.w)  # [N, d]
        vote = self.topagg(-per_shard_grad[:, tf.newaxis, :])[0]
        self.w.assign_add(self.step_size * vote)
        self.count_private_step()
        return {"loss": tf.reduce_mean(per_shard_loss)}


w_true = rng.normal(size=20).astype(np.float32)
x = rng.normal(size=(4000, 20)).astype(np.float32)
y = x @ w_true
(x_parts, y_parts) = (x.reshape(200, 20, 20), y.reshape(200, 20))  # 200 teachers, 20 records each
model = TopAggRegression(x_parts, y_parts, dlens_tf.TopAgg(k=4, sigma=50.0, beta=0.05, seed=1))
model.compile()
budget = dlens_tf.PrivacyBudget(epsilon=5.0, delta=1e-5, accountant="pld")
history = model.fit(tf.data.Dataset.from_tensors(0).repeat(), steps_per_epoch=20, epochs=100, verbose=0, callbacks=[budget])
print(f"steps taken: {int(model.privacy_steps.numpy())} of {budget.max_steps} allowed; "
      f"epsilon spent {budget.history[-1][1]:.3f} <= 5.0")
print(f"loss {history.history['loss'][0]:.2f} -> {history.history['loss'][-1]:.2f}; "
      f"|w - w_true| = {np.linalg.norm(model.w.numpy() - w_true):.2f} (started at {np.linalg.norm(w_true):.2f})")
