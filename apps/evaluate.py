"""Utility of a synthetic dataset: train the evaluation CNN on it, test on a real test set, write JSON.

  python3 apps/evaluate.py --data=runs/mnist_quick/synthetic.npz --dataset=mnist --out=utility.json

The .npz holds `x` (uint8 [n, H, W, C]) and `y` (int [n]), as written by train_datalens.py and
generate.py. Both accuracies are reported: the paper's (max over epochs of the test accuracy) and an
honest one (epoch chosen on held-out synthetic records). `--protocol=paper` is the official schedule
(SGD 2e-3, batch 512, 600 epochs); the default `fast` one (Adam 1e-3, 20 epochs) suits a CPU.
With --filter_keep_fraction < 1 the classifier trains only on the records the own-label filter keeps.
"""

import json
import os

import numpy as np
from absl import flags

from dlens_tf import data
from dlens_tf.evaluation import FAST_PROTOCOL, PAPER_PROTOCOL, evaluate_synthetic

import _cli  # apps/_cli.py

_PROTOCOLS = {"fast": FAST_PROTOCOL, "paper": PAPER_PROTOCOL}

flags.DEFINE_string("data", None, "Synthetic dataset: an .npz with arrays `x` (uint8 images) and `y` (int labels).")
flags.DEFINE_enum("dataset", "mnist", list(data.NAMES), "Real dataset whose TEST split scores the classifier.")
flags.DEFINE_string("out", None, "Output JSON (default: <data without .npz>_utility.json).")
flags.DEFINE_enum("protocol", "fast", list(_PROTOCOLS), "Schedule: fast (Adam, 20 epochs) or paper (SGD 2e-3, 600 epochs).")
flags.DEFINE_integer("epochs", None, "Override the protocol's number of epochs.")
flags.DEFINE_integer("batch_size", None, "Override the protocol's batch size.")
flags.DEFINE_float("learning_rate", None, "Override the protocol's learning rate.")
flags.DEFINE_enum("optimizer", None, ["adam", "sgd"], "Override the protocol's optimizer.")
flags.DEFINE_float("holdout_fraction", 0.1, "Synthetic records held out to pick the honest epoch (0: final epoch).")
flags.DEFINE_integer("seed", None, "Seed of the filter, split, initialisation and shuffling (default: random).")
flags.mark_flag_as_required("data")
_cli.define_filter_flags()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    with np.load(FLAGS.data) as synthetic:
        x_syn, y_syn = synthetic["x"], synthetic["y"]
    _, (x_test, y_test) = data.load(FLAGS.dataset)
    num_classes = int(max(y_syn.max(), y_test.max())) + 1
    generated = len(x_syn)
    x_syn, y_syn = _cli.filter_synthetic(x_syn, y_syn, num_classes, FLAGS.filter_keep_fraction, FLAGS.filter_epochs,
                                         FLAGS.seed)
    schedule = dict(_PROTOCOLS[FLAGS.protocol])
    for name in ("epochs", "batch_size", "learning_rate", "optimizer"):
        if FLAGS[name].value is not None:
            schedule[name] = FLAGS[name].value
    result = evaluate_synthetic(
        x_syn, y_syn, x_test, y_test, num_classes=num_classes,
        holdout_fraction=FLAGS.holdout_fraction, seed=FLAGS.seed, verbose=1, **schedule,
    )
    out = FLAGS.out or os.path.splitext(FLAGS.data)[0] + "_utility.json"
    report = dict(data=FLAGS.data, dataset=FLAGS.dataset, protocol=FLAGS.protocol,
                  filter=dict(keep_fraction=FLAGS.filter_keep_fraction, epochs=FLAGS.filter_epochs, records=generated,
                              kept=len(x_syn)),
                  **result.to_dict())
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
    print(
        f"accuracy on real {FLAGS.dataset} test: paper protocol (max over epochs) {result.max_test_accuracy:.4f}, "
        f"honest ({result.honest_selection}, epoch {result.honest_epoch}) {result.honest_accuracy:.4f} -> {out}"
    )


if __name__ == "__main__":
    _cli.run(main)
