"""Sample a synthetic dataset from a trained DataLens generator (.keras): writes an .npz and a sample grid.

  python3 apps/generate.py --generator=runs/mnist_quick/generator.keras --num=100000 --out=synthetic.npz

Sampling is post-processing of the DP generator: it costs no privacy. Labels are balanced (record j
gets class j % num_classes) unless --label restricts them to one class. With --filter_keep_fraction < 1
only the share of each class that the own-label filter keeps is written (also post-processing).
"""

import os

import numpy as np
from absl import flags
from tensorflow import keras

from dlens_tf.evaluation import save_image_grid

import _cli  # apps/_cli.py

flags.DEFINE_string("generator", None, "Trained generator, a .keras file (train_datalens.py writes generator.keras).")
flags.DEFINE_integer("num", 10_000, "Number of synthetic records.", lower_bound=1)
flags.DEFINE_integer("label", None, "Generate only this class (default: balanced over all classes).")
flags.DEFINE_string("out", "synthetic.npz", "Output .npz with x (uint8 [n, H, W, C]) and y (int64 [n]).")
flags.DEFINE_string("grid", None, "Sample grid PNG, one row per class (default: <out without .npz>.png; 'none' to skip).")
flags.DEFINE_integer("per_class", 10, "Grid columns (samples per class).", lower_bound=1)
flags.DEFINE_integer("batch_size", 1000, "Records per generator call.", lower_bound=1)
flags.DEFINE_integer("seed", None, "Seed of the latent noise and the filter (default: OS entropy).")
flags.mark_flag_as_required("generator")
_cli.define_filter_flags()
FLAGS = flags.FLAGS


def main(argv):
    del argv
    generator = keras.models.load_model(FLAGS.generator)
    labels = None if FLAGS.label is None else np.full(FLAGS.num, FLAGS.label)
    x, y = generator.sample(FLAGS.num, labels=labels, batch_size=FLAGS.batch_size, seed=FLAGS.seed)
    x, y = _cli.filter_synthetic(x, y, generator.num_classes, FLAGS.filter_keep_fraction, FLAGS.filter_epochs, FLAGS.seed)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    np.savez_compressed(FLAGS.out, x=x, y=y)
    print(f"{len(x)} records {x.shape[1:]} -> {FLAGS.out}")
    grid = FLAGS.grid or os.path.splitext(FLAGS.out)[0] + ".png"
    if grid.lower() != "none":
        classes = np.arange(generator.num_classes)
        x_grid, y_grid = generator.sample(FLAGS.per_class * len(classes), labels=np.repeat(classes, FLAGS.per_class),
                                          seed=FLAGS.seed)
        save_image_grid(grid, x_grid, y_grid, num_classes=len(classes), per_class=FLAGS.per_class)
        print(f"sample grid -> {grid}")


if __name__ == "__main__":
    _cli.run(main)
