"""How much DataLens teachers agree on their votes: the signal TopAgg's noise has to beat.

Builds a preset's teacher ensemble with fewer teachers (each holding `--records_per_teacher` real
records, as the paper's 60000 / 4000 = 15), trains it for `--teacher_steps` updates against a fixed,
untrained generator, and after each listed count compresses every teacher's image gradients on one
synthetic batch with TopkStoSignGrad and sums them without noise. Printed per count:

  agreement   mean over records of |clean vote| / N on each record's k strongest coordinates: 1 means
              every teacher voted the same sign on the same k coordinates; the noisy vote keeps a
              coordinate when |vote + N(0, sigma^2)| > beta * N;
  deterministic  share of top-k entries with |g| >= clip, whose stochastic sign is deterministic.

Nothing is released and no privacy is spent: this is a diagnostic on the teachers alone.

  python3 apps/teacher_agreement.py --preset=mnist_eps1 --num_teachers=250 --shared_init=false
  python3 apps/teacher_agreement.py --preset=mnist_eps1 --num_teachers=250 --shared_init=true
"""

import time

import dlens_tf  # noqa: F401  first: it turns on TF's oneDNN kernels, which must happen before TensorFlow loads

import numpy as np
import tensorflow as tf
from absl import app, flags

from dlens_tf import data
from dlens_tf.presets import PRESETS, get_preset
from dlens_tf.privacy.topagg import vote_agreement

import _cli  # apps/_cli.py

FLAGS = flags.FLAGS
flags.DEFINE_enum("preset", "mnist_eps1", sorted(PRESETS), "Preset whose teachers, k and clip are used.")
flags.DEFINE_integer("num_teachers", 250, "Teachers N (the preset's own count needs its full memory and time).")
flags.DEFINE_integer("records_per_teacher", 15, "Real records per teacher partition.")
flags.DEFINE_list("teacher_steps", ["10", "30"], "Teacher update counts after which agreement is measured.")
flags.DEFINE_bool("shared_init", None, "Start every teacher from the same weights (default: the preset's).")
flags.DEFINE_integer("seed", 0, "Seed of the weights, the partition and the synthetic batch.")


def main(_):
    try:
        steps = sorted(int(s) for s in FLAGS.teacher_steps)
    except ValueError:
        steps = []
    if not steps or steps[0] < 0:
        raise app.UsageError(f"--teacher_steps: expected integer counts >= 0. Received: {FLAGS.teacher_steps}")
    preset = get_preset(FLAGS.preset).replace(num_teachers=FLAGS.num_teachers)
    if FLAGS.shared_init is not None:
        preset = preset.replace(shared_teacher_init=FLAGS.shared_init)
    (x, y), _ = data.load(preset.dataset)
    records = FLAGS.records_per_teacher * preset.num_teachers
    if records > len(x):
        raise app.UsageError(f"--num_teachers x --records_per_teacher = {records} exceeds the {len(x)} records "
                             f"of {preset.dataset}.")
    model = preset.build(x.shape[1:], int(y.max()) + 1, seed=FLAGS.seed)
    model.set_data(x[:records], y[:records], seed=FLAGS.seed)
    r = np.random.default_rng(FLAGS.seed)
    labels = tf.constant(r.integers(0, model.num_classes, preset.batch_size))
    z = tf.constant(r.uniform(-1, 1, (preset.batch_size, preset.z_dim)).astype(np.float32))
    fake = model.generator([z, tf.one_hot(labels, model.num_classes)], training=False)
    start, done = time.time(), 0
    for count in steps:
        model.pretrain_teachers(count - done)
        done = count
        agree, deterministic = vote_agreement(model.teachers.image_gradients(fake, labels), preset.topk,
                                               preset.clip, FLAGS.seed)
        print(f"{FLAGS.preset} N={preset.num_teachers} shared_init={preset.shared_teacher_init} "
              f"teacher_steps={count}: agreement={agree:.3f} deterministic={deterministic:.3f} "
              f"({time.time() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    _cli.run(main)
