"""Train DataLens under a privacy budget, then write the generator, synthetic data, sample grid and utility.

  python3 apps/train_datalens.py --preset=mnist_quick
  python3 apps/train_datalens.py --preset=mnist_eps1 --accountant=pld --run_dir=runs/mnist_eps1
  python3 apps/train_datalens.py --run_dir=runs/mnist_eps1 --resume

Every preset value (dlens_tf/presets.py) can be overridden by the flag of the same name. The run
directory receives:
  config.json      preset, resolved hyper-parameters, seeds (a resumed run reuses them)
  checkpoints/     generator, teachers, both optimizers, RNG states and the privacy step counter
  privacy_ledger.json  the steps started, written before each step: a resumed run is charged for
                   steps a killed process ran after its last checkpoint (see PrivacyBudget)
  history.csv      every --log_steps generator steps: d_loss, g_loss, votes_kept, epsilon (d_loss is
                   the teachers' loss on their sensitive data, NOT differentially private: like the
                   progress log and the checkpoints, keep it with the data; share generator.keras,
                   synthetic.npz, samples.png and summary.json)
  tensorboard/     the same rows as TensorBoard scalars by generator step (tensorboard --logdir=<run_dir>);
                   like history.csv, not differentially private
  generator.keras  the trained generator (apps/generate.py samples from it)
  synthetic.npz    --num_synthetic records: x uint8 [n, H, W, C], y int [n]; with --filter_keep_fraction < 1
                   only the kept share of each class (see dlens_tf.evaluation.filter_by_own_label)
  samples.png      10 samples per class, one row per class
  training.png     epsilon, votes kept per record (and what noise alone keeps), losses against generator
                   steps, and the utility classifier's accuracy per epoch (also written at a time-limited stop);
                   it shows d_loss, so like history.csv it is not differentially private
  summary.json     accuracy (paper and honest protocols), epsilon, delta, generator steps,
                   record-queries, accountant, wall seconds and where they went (time_breakdown: before
                   training, generator steps, checkpoints, generation, filtering, utility classifier), peak
                   resident memory (peak_rss_gb, the largest of a resumed run's parts), machine, all hyper-parameters
The privacy step counter is part of every checkpoint, so with --resume epsilon never resets and the
run as a whole never spends more than the budget; --max_train_seconds stops a long run at a
checkpoint for a later --resume. Without --seed the DP noise is seeded from OS entropy (and not
recorded); the teacher partition always has a recorded seed so that a resumed run keeps it.
"""

import json
import os
import platform
import resource
import sys
import time

import dlens_tf  # first: it turns on TF's oneDNN kernels, which must happen before TensorFlow loads

import numpy as np
import tensorflow as tf
from absl import app, flags
from tensorflow import keras

from dlens_tf import data
from dlens_tf.callbacks import BudgetExhaustedError, BudgetProgress
from dlens_tf.evaluation import evaluate_synthetic, read_history, save_image_grid, save_training_plot
from dlens_tf.models import check_room_for_checkpoint, restore_checkpoint, save_checkpoint
from dlens_tf.presets import PRESETS, DataLensPreset, get_preset
from dlens_tf.privacy.accountant import PrivacyAccountant

import _cli  # apps/_cli.py

# Preset fields a resumed run may change: they touch neither the model nor the DP mechanism.
_RESUMABLE = ("epsilon", "accountant", "num_synthetic", "filter_keep_fraction", "filter_epochs", "eval_epochs",
              "eval_optimizer", "eval_learning_rate")
_GRID_PER_CLASS = 10

flags.DEFINE_enum("preset", "mnist_quick", sorted(PRESETS), "Named hyper-parameter set (dlens_tf/presets.py).")
flags.DEFINE_string("run_dir", None, "Output directory (default: runs/<preset>, or runs/<preset>-<time> when that "
                    "exists and --resume is not given).")
flags.DEFINE_bool("resume", False, "Continue the run in --run_dir from its latest checkpoint (epsilon never resets).")
flags.DEFINE_integer("seed", None, "Seed of initialisation, sampling, DP noise and evaluation for a reproducible run "
                     "(default: OS entropy, not recorded).")
flags.DEFINE_integer("log_steps", 10, "Generator steps per history.csv row.")
flags.DEFINE_float("log_every_seconds", 30.0, "Seconds between progress lines.")
flags.DEFINE_float("checkpoint_minutes", 10.0, "Minutes between checkpoints (one is always written at the end). "
                   "After each, the run stops, every step saved, if the disk has no room for the next.")
flags.DEFINE_float("max_train_seconds", 0.0, "Stop training at a checkpoint after this long (0: no limit); "
                   "continue later with --resume.")
flags.DEFINE_string("data_dir", None, "Directory with the dataset files, if not installed (see dlens_tf.data.load).")


_cli.define_preset_flags()
FLAGS = flags.FLAGS


def _resolve_run(run_dir):
    """(preset name, partition seed, DataLensPreset): the saved ones when resuming, else from flags."""
    config_path = os.path.join(run_dir, "config.json")
    overrides = _cli.preset_overrides()
    if FLAGS.resume:
        if not os.path.exists(config_path):
            raise app.UsageError(f"--resume: {config_path} does not exist; start the run without --resume.")
        with open(config_path) as f:
            saved = json.load(f)
        config = DataLensPreset(**saved["config"])
        fixed = sorted(k for k, v in overrides.items() if k not in _RESUMABLE and v != getattr(config, k))
        if fixed:
            raise app.UsageError(f"--resume cannot change {fixed}: they define the model or the DP mechanism.")
        return saved["preset"], saved["partition_seed"], _replace(config, overrides)
    if os.path.exists(config_path):
        raise app.UsageError(f"{run_dir} already holds a run: pass --resume to continue it, or another --run_dir.")
    partition_seed = FLAGS.seed if FLAGS.seed is not None else int(np.random.SeedSequence().generate_state(1)[0])
    config = _replace(get_preset(FLAGS.preset), overrides)
    if config.sigma_end is not None and not config.ramp_steps:  # fixed now: a resumed run keeps this schedule
        config = _replace(config, dict(ramp_steps=config.noise_schedule().steps))
    return FLAGS.preset, partition_seed, config


def _replace(config, overrides):
    """`config.replace(**overrides)`, a bad value reported as a usage error before anything runs."""
    try:
        return config.replace(**overrides)
    except ValueError as e:
        raise app.UsageError(str(e)) from None


class _Checkpoint(keras.callbacks.Callback):
    """Saves the full training state every `minutes` and at the end, with the run's accumulated seconds.

    After a periodic save, if the disk has no room for the next checkpoint, it stops training there (nothing
    lost) and keeps the reason in `no_room`.

    state: the earlier parts' `train_state.json` ({} for a new run); start: this part's start time. Made just
    before training; besides the seconds in all, it sums the seconds before training (start-up, restoring,
    teacher pre-training) and those spent saving checkpoints.
    """

    def __init__(self, manager, minutes, state_path, state, start):
        super().__init__()
        self.manager, self.minutes, self.state_path = manager, minutes, state_path
        self.seconds_before, self.start, self.last = state.get("seconds", 0.0), start, time.time()
        self.setup_seconds = state.get("setup_seconds", 0.0) + time.time() - start
        self.checkpoint_seconds = state.get("checkpoint_seconds", 0.0)
        self.earlier_peak_rss_gb = state.get("peak_rss_gb", 0.0)
        self.saved_steps, self.no_room = state.get("generator_steps"), None

    def peak_rss_gb(self):
        """The largest resident memory of any part of the run so far."""
        return max(self.earlier_peak_rss_gb, _peak_rss_gb())

    def save(self):
        steps = int(self.model.privacy_steps.numpy())
        if steps == self.saved_steps:
            return
        begin = time.time()
        save_checkpoint(self.manager, checkpoint_number=steps)  # on disk, not in the page cache
        self.checkpoint_seconds += time.time() - begin
        with open(self.state_path, "w") as f:
            json.dump(dict(seconds=self.seconds_before + time.time() - self.start, generator_steps=steps,
                           setup_seconds=self.setup_seconds, checkpoint_seconds=self.checkpoint_seconds,
                           peak_rss_gb=self.peak_rss_gb()), f)
        self.last, self.saved_steps = time.time(), steps

    def on_train_batch_end(self, batch, logs=None):
        if time.time() - self.last >= 60 * self.minutes:
            self.save()
            try:
                check_room_for_checkpoint(self.manager)
            except OSError as e:
                self.no_room, self.model.stop_training = e.strerror, True

    def on_train_end(self, logs=None):
        self.save()


def main(argv):
    del argv
    start = time.time()
    run_dir = FLAGS.run_dir or os.path.join("runs", FLAGS.preset)
    if FLAGS.run_dir is None and not FLAGS.resume and os.path.exists(run_dir):
        run_dir += time.strftime("-%Y%m%d-%H%M%S")  # the default directory never refuses a fresh run
    preset, partition_seed, config = _resolve_run(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(dict(preset=preset, partition_seed=partition_seed, config=config.to_dict()), f, indent=2)
    print(f"run {run_dir}: preset {preset}; DP noise seed: "
          f"{FLAGS.seed if FLAGS.seed is not None else 'OS entropy'}", flush=True)

    if FLAGS.seed is not None:
        keras.utils.set_random_seed(FLAGS.seed)  # also seeds the layers' default initialisers
    (x_train, y_train), (x_test, y_test) = data.load(config.dataset, FLAGS.data_dir)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    model = config.build(x_train.shape[1:], num_classes, seed=FLAGS.seed)
    model.set_data(x_train, y_train, seed=partition_seed)

    state_path = os.path.join(run_dir, "train_state.json")
    checkpoint = tf.train.Checkpoint(model=model)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(run_dir, "checkpoints"), max_to_keep=1)
    state = {}
    if FLAGS.resume and manager.latest_checkpoint:
        restore_checkpoint(checkpoint, manager.latest_checkpoint)  # one variable at a time: bounded memory
        with open(state_path) as f:
            state = json.load(f)
        print(f"resumed {manager.latest_checkpoint}: {int(model.privacy_steps.numpy())} generator steps spent",
              flush=True)
        try:
            check_room_for_checkpoint(manager)
        except OSError as e:
            sys.exit(f"{e.strerror}; free disk space, then resume again (nothing was spent)")

    max_steps = PrivacyAccountant(config.accountant).max_steps(model.dp_event_of_steps, config.epsilon, config.delta)
    budget = dlens_tf.PrivacyBudget(config.epsilon, config.delta, accountant=config.accountant,
                                    ledger=os.path.join(run_dir, "privacy_ledger.json"))
    progress = BudgetProgress(budget, FLAGS.log_every_seconds, FLAGS.max_train_seconds,
                              os.path.join(run_dir, "history.csv"), os.path.join(run_dir, "tensorboard"))
    remaining = max(max_steps - int(model.privacy_steps.numpy()), 1)
    pending = max(model.pretrain_steps - int(model.pretrained_steps.numpy()), 0)
    for i in range(pending):  # no privacy cost; done here, not inside fit, to show progress
        model.pretrain_teachers(1)
        print(f"teacher pre-training step {i + 1}/{pending} ({time.time() - start:.0f} s)", flush=True)
    saver = _Checkpoint(manager, FLAGS.checkpoint_minutes, state_path, state, start)
    try:
        model.fit(steps_per_epoch=FLAGS.log_steps, epochs=-(-remaining // FLAGS.log_steps), verbose=0,
                  callbacks=[budget, progress, saver])
    except BudgetExhaustedError as e:
        print(f"no training: {e}", flush=True)
    train_end = time.time()
    train_seconds = saver.seconds_before + train_end - start
    if saver.no_room:
        sys.exit(f"stopped at step {int(model.privacy_steps.numpy())}/{max_steps}, its checkpoint saved: "
                 f"{saver.no_room}; free disk space, then continue with: --run_dir={run_dir} --resume")
    if progress.stopped_for_time:
        print(f"stopped after --max_train_seconds at step {int(model.privacy_steps.numpy())}/{max_steps}; "
              f"continue with: --run_dir={run_dir} --resume\ncurves so far: {_save_plot(run_dir, model, config)}",
              flush=True)
        return

    steps = int(model.privacy_steps.numpy())
    epsilon = budget.epsilon_after(steps) if steps else 0.0
    generator_path = os.path.join(run_dir, "generator.keras")
    model.generator.save(generator_path)
    x_syn, y_syn = model.generate(config.num_synthetic, seed=FLAGS.seed)
    filter_start = time.time()
    x_syn, y_syn = _cli.filter_synthetic(x_syn, y_syn, num_classes, config.filter_keep_fraction, config.filter_epochs,
                                         FLAGS.seed)
    filter_seconds = time.time() - filter_start
    np.savez_compressed(os.path.join(run_dir, "synthetic.npz"), x=x_syn, y=y_syn)
    grid_path = os.path.join(run_dir, "samples.png")
    x_grid, y_grid = model.generate(_GRID_PER_CLASS * num_classes,
                                    labels=np.repeat(np.arange(num_classes), _GRID_PER_CLASS), seed=FLAGS.seed)
    save_image_grid(grid_path, x_grid, y_grid, num_classes=num_classes, per_class=_GRID_PER_CLASS)

    utility_start = time.time()
    utility = evaluate_synthetic(x_syn, y_syn, x_test, y_test, num_classes=num_classes, epochs=config.eval_epochs,
                                 optimizer=config.eval_optimizer, learning_rate=config.eval_learning_rate,
                                 seed=FLAGS.seed, verbose=1)
    now = time.time()
    breakdown = dict(before_training=saver.setup_seconds,
                     training_steps=train_seconds - saver.setup_seconds - saver.checkpoint_seconds,
                     checkpoints=saver.checkpoint_seconds, generation=utility_start - train_end - filter_seconds,
                     filtering=filter_seconds, utility=now - utility_start)
    summary = dict(
        preset=preset,
        dataset=config.dataset,
        accuracy=utility.max_test_accuracy,
        accuracy_honest=utility.honest_accuracy,
        epsilon=epsilon,
        target_epsilon=config.epsilon,
        delta=config.delta,
        accountant=config.accountant,
        generator_steps=steps,
        max_generator_steps=max_steps,
        record_queries=steps * config.batch_size,
        synthetic_records=dict(generated=config.num_synthetic, kept=len(x_syn)),
        lost_steps_charged=budget.lost_steps,
        train_seconds=round(train_seconds, 1),
        wall_seconds=round(train_seconds + now - train_end, 1),
        time_breakdown={key: round(value, 1) for key, value in breakdown.items()},
        peak_rss_gb=round(saver.peak_rss_gb(), 2),
        machine=_machine(model),
        seed=FLAGS.seed,
        partition_seed=partition_seed,
        hyper_parameters=config.to_dict(),
        utility=utility.to_dict(),
        files=dict(generator="generator.keras", synthetic="synthetic.npz", grid="samples.png", history="history.csv",
                   plot="training.png"),
    )
    plot_path = _save_plot(run_dir, model, config, utility.history)
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(f"epsilon spent: {epsilon:.4f} of {config.epsilon} (delta={config.delta}, {config.accountant}) in "
          f"{steps} generator steps ({steps * config.batch_size} record-queries)\n"
          f"utility on real {config.dataset} test: {utility.max_test_accuracy:.4f} (paper protocol: max over "
          f"epochs), {utility.honest_accuracy:.4f} (honest: epoch chosen on held-out synthetic data)\n"
          f"wall time: {summary['wall_seconds'] / 60:.1f} min ("
          + ", ".join(f"{key.replace('_', ' ')} {value / 60:.1f}" for key, value in summary["time_breakdown"].items())
          + f"), peak memory {summary['peak_rss_gb']:.1f} GB\nsamples: {grid_path}\ncurves: {plot_path}\nsummary: {os.path.join(run_dir, 'summary.json')}", flush=True)


def _save_plot(run_dir, model, config, utility_history=None):
    """training.png: the history so far against generator steps (and the utility classifier's epochs)."""
    path = os.path.join(run_dir, "training.png")
    noise_only = model.topagg.noise_only_keep_rate(model.teachers.num_teachers) * np.prod(model.vote_shape)
    save_training_plot(path, read_history(os.path.join(run_dir, "history.csv")), epsilon_budget=config.epsilon,
                       noise_only_votes=noise_only, utility_history=utility_history)
    return path


def _peak_rss_gb():
    """This process's peak resident memory in GB (VmHWM; ru_maxrss where /proc is missing)."""
    if os.path.exists("/proc/self/status"):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) * 1024 / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # kB on Linux


def _machine(model):
    """What the wall times depend on: cores, CPU model and vector extensions, TF, teacher convolutions."""
    cpu, isa = platform.processor(), []
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            info = f.read()
        names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
        flag_lines = [line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")]
        cpu = names[0] if names else cpu
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag_lines and f in flag_lines[0]]
    return dict(cores=os.cpu_count(), cpu=cpu, isa=isa, platform=platform.platform(), tensorflow=tf.__version__,
                teacher_convolution=model.teachers.convolution_in_use)


if __name__ == "__main__":
    _cli.run(main)
