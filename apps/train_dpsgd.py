"""Train a small CNN with DP-SGD (gaussian, topagg, topk, randk or lowrank) and write a JSON summary.

  python3 apps/train_dpsgd.py --dataset=mnist --mechanism=topagg --epsilon=2 --output=results/run.json

The noise multiplier is calibrated from --epsilon (or given with --noise_multiplier); training
runs under a PrivacyBudget callback, so it stops before a step that would exceed the budget.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from dlens_tf.experiments.dpsgd import DPSGDExperiment  # noqa: E402

import _cli  # apps/_cli.py  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "mnist", ["mnist", "fashion_mnist", "digits"], "Training/test data (offline).")
flags.DEFINE_enum("mechanism", "gaussian", ["gaussian", "topagg", "topk", "randk", "lowrank"], "Private aggregation.")
flags.DEFINE_float("epsilon", None, "Target epsilon; the noise multiplier is calibrated to spend it over --epochs.")
flags.DEFINE_float("noise_multiplier", None, "Noise stddev / sensitivity, instead of --epsilon (0 = no privacy).")
flags.DEFINE_float("delta", 1e-5, "Target delta.")
flags.DEFINE_integer("epochs", 2, "Epochs (ceil(n / batch_size) Poisson-sampled steps each).")
flags.DEFINE_integer("batch_size", 256, "Expected batch size (poisson) or batch size (shuffle).")
flags.DEFINE_float("l2_norm_clip", 1.0, "Per-example gradient clip C (joint over all weights).")
flags.DEFINE_float("learning_rate", None, "SGD learning rate; default 0.5, or 0.03 for topagg (sign updates).")
flags.DEFINE_float("momentum", 0.0, "SGD momentum.")
flags.DEFINE_enum("accountant", "rdp", ["rdp", "pld"], "Accountant for calibration and the budget.")
flags.DEFINE_enum("sampling", "poisson", ["poisson", "shuffle"], "Batch sampling (and the matching accounting).")
flags.DEFINE_float("rate", None, "Fraction of coordinates kept (topagg default 0.01, topk/randk 0.1).")
flags.DEFINE_integer("rank", 1, "lowrank: rank of each weight matrix's update.")
flags.DEFINE_float("beta", 0.0, "topagg: vote threshold as a fraction of the batch size.")
flags.DEFINE_enum("noise_placement", "after", ["after", "before"], "topk/randk/lowrank: noise before or after compressing.")
flags.DEFINE_bool("error_feedback", False, "topk/randk/lowrank (after): carry the dropped residual to the next step.")
flags.DEFINE_integer("max_train_examples", None, "Use a random subset of the training set of this size.")
flags.DEFINE_integer("seed", 0, "Seed for data order, initialisation and noise (-1: OS entropy).")
flags.DEFINE_bool("jit_compile", False, "XLA-compile the train step (slower than TF's kernels on small CPUs).")
flags.DEFINE_string("output", None, "Path of the JSON summary (printed to stdout as well).")
flags.DEFINE_string("tensorboard_dir", None, "Directory for TensorBoard logs (loss, accuracy, epsilon per epoch).")


def mechanism_config():
    m = FLAGS.mechanism
    if m == "topagg":
        return {"rate": FLAGS.rate or 0.01, "beta": FLAGS.beta}
    if m in ("topk", "randk"):
        return {"rate": FLAGS.rate or 0.1, "noise_placement": FLAGS.noise_placement, "error_feedback": FLAGS.error_feedback}
    if m == "lowrank":
        return {"rank": FLAGS.rank, "noise_placement": FLAGS.noise_placement, "error_feedback": FLAGS.error_feedback}
    return {}


def main(argv):
    del argv
    learning_rate = FLAGS.learning_rate or (0.03 if FLAGS.mechanism == "topagg" else 0.5)
    summary = DPSGDExperiment(
        dataset=FLAGS.dataset, mechanism=FLAGS.mechanism, epsilon=FLAGS.epsilon, noise_multiplier=FLAGS.noise_multiplier,
        delta=FLAGS.delta, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, l2_norm_clip=FLAGS.l2_norm_clip,
        learning_rate=learning_rate, momentum=FLAGS.momentum, accountant=FLAGS.accountant, sampling=FLAGS.sampling,
        seed=None if FLAGS.seed < 0 else FLAGS.seed, max_train_examples=FLAGS.max_train_examples,
        jit_compile=FLAGS.jit_compile, mechanism_config=mechanism_config(), tensorboard_dir=FLAGS.tensorboard_dir,
    ).run(verbose=2)
    text = json.dumps(summary, indent=2, sort_keys=True)
    print(text)
    if FLAGS.output:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
        with open(FLAGS.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    _cli.run(main)
