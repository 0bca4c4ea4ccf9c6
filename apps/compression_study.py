"""The DP x compression grid: compressor and rate x noise multiplier -> test accuracy; table + plot.

  python3 apps/compression_study.py --dataset=mnist --max_train_examples=8000 --epochs=1 --output_prefix=results/compression_study

Writes <prefix>.md, <prefix>.csv, <prefix>.png and <prefix>.json. Compression is applied to the
noisy average (post-processing); "+ef" rows add error feedback (our reading of the study's
recommendation, see dlens_tf.experiments.compression_study).
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from dlens_tf.experiments import compression_study as study  # noqa: E402
from dlens_tf.experiments.dpsgd import DPSGDExperiment  # noqa: E402

import _cli  # apps/_cli.py  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", "mnist", ["mnist", "fashion_mnist", "digits"], "Dataset.")
flags.DEFINE_list("compressors", ["topk", "randk", "lowrank"], "Compressors to study.")
flags.DEFINE_list("rates", ["0.1", "0.01"], "Fractions kept (topk, randk).")
flags.DEFINE_list("ranks", ["1", "4"], "Ranks (lowrank).")
flags.DEFINE_list("noise_multipliers", ["0", "1", "2"], "Noise multipliers (0 = non-private).")
flags.DEFINE_list("recommended", ["topk"], "Compressors also run with error feedback (the recommendation).")
flags.DEFINE_integer("epochs", 1, "Epochs per cell.")
flags.DEFINE_integer("batch_size", 256, "Expected batch size.")
flags.DEFINE_float("learning_rate", 0.5, "SGD learning rate.")
flags.DEFINE_float("l2_norm_clip", 1.0, "Per-example clip C.")
flags.DEFINE_integer("max_train_examples", 8000, "Training subset size (the grid has many cells).")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("output_prefix", "results/compression_study", "Path prefix of the outputs.")


def main(argv):
    del argv
    base = DPSGDExperiment(dataset=FLAGS.dataset, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
                           learning_rate=FLAGS.learning_rate, l2_norm_clip=FLAGS.l2_norm_clip,
                           max_train_examples=FLAGS.max_train_examples, seed=FLAGS.seed, epsilon=None, noise_multiplier=0.0)
    cells = study.study_grid(tuple(FLAGS.compressors), tuple(float(r) for r in FLAGS.rates), tuple(int(r) for r in FLAGS.ranks),
                             tuple(float(z) for z in FLAGS.noise_multipliers), tuple(FLAGS.recommended))
    rows = study.run_study(base, cells)
    prefix = FLAGS.output_prefix
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    study.write_table(rows, prefix + ".md", prefix + ".csv")
    study.plot(rows, prefix + ".png", f"DP-SGD x compression, {FLAGS.dataset}, {FLAGS.epochs} epoch(s)")
    with open(prefix + ".json", "w") as f:
        json.dump({"settings": {k: v.value for k, v in FLAGS.__flags.items() if k in main_flags()}, "rows": rows}, f, indent=2)
    print(open(prefix + ".md").read())


def main_flags():
    return {"dataset", "compressors", "rates", "ranks", "noise_multipliers", "recommended", "epochs", "batch_size",
            "learning_rate", "l2_norm_clip", "max_train_examples", "seed"}


if __name__ == "__main__":
    _cli.run(main)
