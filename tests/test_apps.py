"""The absl apps (run as subprocesses at the digits scale) and the presets they read."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest
from PIL import Image

from dlens_tf import data
from dlens_tf.evaluation import PAPER_PROTOCOL
from dlens_tf.models import Generator
from dlens_tf.presets import PRESETS, get_preset
from dlens_tf.privacy import GeometricNoiseSchedule, PrivacyAccountant, longest_geometric_schedule, topagg_dp_event

# One pytest-xdist worker runs this whole module, so the `runs` fixture trains once.
pytestmark = pytest.mark.xdist_group("apps")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_app(name, *args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "apps", name), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT,
    )


def test_paper_presets_hold_the_official_hyper_parameters():
    # (teachers, top-k, sigma, beta, clip, z_dim, eps) per dataset and budget, REFERENCE.md section 1.
    official = {
        "mnist_eps1": ("mnist", 4000, 200, 5000, 0.7, 1e-5, 50, 1),
        "mnist_eps10": ("mnist", 4000, 300, 800, 0.2, None, 50, 10),
        "fmnist_eps1": ("fashion_mnist", 4000, 200, 5000, 0.9, 1e-5, 50, 1),
        "fmnist_eps10": ("fashion_mnist", 4000, 350, 1000, 0.27, None, 64, 10),
    }
    for name, values in official.items():
        p = get_preset(name)
        assert (p.dataset, p.num_teachers, p.topk, p.sigma, p.beta, p.clip, p.z_dim, p.epsilon) == values, name
        assert (p.delta, p.gamma, p.d_steps, p.batch_size, p.pretrain_steps) == (1e-5, 1e-3, 2, 15, 10), name
        assert (p.learning_rate, p.beta_1, p.num_synthetic) == (1e-3, 0.5, 100_000), name
        assert p.shared_teacher_init, name  # as the official code's teachers nearly are (50 initial weight sets)
        # The paper's classifier optimiser and learning rate (fewer epochs than its 600, for a CPU).
        assert (p.eval_optimizer, p.eval_learning_rate) == ("sgd", PAPER_PROTOCOL["learning_rate"]), name
        assert 0 < p.eval_epochs <= PAPER_PROTOCOL["epochs"], name


def test_every_preset_fits_its_dataset():
    for name, p in PRESETS.items():
        if name == "digits_tiny" or p.dataset == "digits":
            (x, _), _ = data.load(p.dataset)
        else:
            x = np.zeros((60000, 28, 28, 1))  # MNIST and Fashion-MNIST train sets
        assert p.num_teachers <= len(x), name
        assert p.topk <= np.prod(x.shape[1:]), name
        assert 0 < p.delta < 1 / len(x), name


def test_preset_overrides_and_unknown_names():
    p = get_preset("mnist_eps1").replace(num_teachers=10, clip=None)
    assert p.num_teachers == 10 and p.clip is None and get_preset("mnist_eps1").num_teachers == 4000
    with pytest.raises(ValueError, match="unknown preset fields"):
        p.replace(teachers=3)
    with pytest.raises(ValueError, match="`preset`"):
        get_preset("mnist_eps2")


@pytest.mark.parametrize("change", [dict(filter_keep_fraction=0), dict(filter_keep_fraction=1.5), dict(filter_epochs=0),
                                    dict(eval_epochs=0), dict(num_synthetic=0), dict(eval_optimizer="rmsprop"),
                                    dict(eval_learning_rate=-1.0), dict(eval_learning_rate=float("nan"))])
def test_values_used_after_training_are_checked_when_the_preset_is_made(change):
    """They would otherwise fail only after hours of training."""
    name = next(iter(change))
    with pytest.raises(ValueError, match=name):
        get_preset("mnist_eps1").replace(**change)


def test_vote_pool_reaches_the_model():
    assert get_preset("mnist_eps1").vote_pool == 1  # the paper votes on pixels
    model = get_preset("digits_tiny").replace(vote_pool=2, topk=4).build((8, 8, 1), 10, seed=0)
    assert model.vote_pool == 2 and model.vote_shape == (4, 4, 1)


def test_vote_output_reaches_the_model():
    assert get_preset("mnist_eps1").vote_output == "sign"  # the paper's votes
    assert get_preset("digits_tiny").replace(vote_output="noisy_sum").build((8, 8, 1), 10, seed=0).vote_output == "noisy_sum"


def test_sigma_end_gives_the_longest_ramp_the_budget_allows_and_bad_values_fail():
    tiny = get_preset("digits_tiny")
    assert get_preset("mnist_eps1").sigma_end is None and tiny.noise_schedule() is None  # the paper: one sigma
    assert tiny.build((8, 8, 1), 10, seed=0).noise_schedule is None
    ramp = tiny.replace(sigma_end=20.0)
    expected = longest_geometric_schedule(40.0, 20.0, lambda sigma: topagg_dp_event(10, sigma, 16), 12.0, 1e-5, "rdp")
    assert ramp.noise_schedule() == expected and expected.steps > 1
    assert ramp.build((8, 8, 1), 10, seed=0).noise_schedule == expected
    assert ramp.replace(ramp_steps=5).noise_schedule() == GeometricNoiseSchedule(40.0, 20.0, 5)
    for change in (dict(sigma_end=0.0), dict(sigma_end=-1.0), dict(sigma_end=float("nan")), dict(ramp_steps=-1)):
        with pytest.raises(ValueError, match=next(iter(change))):
            tiny.replace(**change)


def test_teacher_gradient_dtype_reaches_the_teachers():
    assert get_preset("digits_tiny").build((8, 8, 1), 10, seed=0).teachers.image_gradient_dtype == "float32"
    model = get_preset("digits_tiny").replace(teacher_gradient_dtype="bfloat16").build((8, 8, 1), 10, seed=0)
    assert model.teachers.image_gradient_dtype == "bfloat16"


def test_generator_optimizer_defaults_to_the_teachers_and_can_differ():
    tiny = get_preset("digits_tiny")
    for overrides, generator in (({}, (tiny.learning_rate, tiny.beta_1)),
                                 ({"generator_learning_rate": 3e-4, "generator_beta_1": 0.9}, (3e-4, 0.9))):
        model = tiny.replace(**overrides).build((8, 8, 1), 10, seed=0)
        assert (model.teachers.learning_rate, model.teachers.beta_1) == (tiny.learning_rate, tiny.beta_1)
        assert (model.learning_rate, model.beta_1) == pytest.approx(generator)
        assert float(model.optimizer.beta_1) == pytest.approx(generator[1])


def app_command(name, *args):
    return [sys.executable, os.path.join(ROOT, "apps", name), *args]


def start(name, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(app_command(name, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)


def finish(process, timeout=300):
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_helpfull_exits_0_and_lists_the_flags():
    expected = {
        "train_datalens.py": ["--preset", "--run_dir", "--resume", "--accountant", "--num_synthetic", "--eval_epochs",
                              "--seed", "--num_teachers", "--topk", "--sigma", "--beta", "--clip", "--epsilon",
                              "--max_train_seconds", "--filter_keep_fraction", "mnist_eps1", "fmnist_eps10"],
        "generate.py": ["--generator", "--num", "--out", "--grid", "--seed", "--filter_keep_fraction"],
        "evaluate.py": ["--data", "--dataset", "--protocol", "--holdout_fraction", "--epochs", "--filter_keep_fraction",
                        "--filter_epochs"],
        "train_dpsgd.py": ["--mechanism", "--epsilon", "--noise_placement", "--sampling", "--output", "--tensorboard_dir"],
        "compression_study.py": ["--compressors", "--rates", "--noise_multipliers", "--output_prefix"],
        "dpsgd_table.py": ["--results", "--out"],
        "teacher_agreement.py": ["--preset", "--num_teachers", "--records_per_teacher", "--teacher_steps",
                                 "--shared_init"],
        "datalens_proxy.py": ["--preset", "--proxy_teachers", "--steps", "--eval_every", "--samples", "--topk", "--d_steps"],
    }
    processes = {name: start(name, "--helpfull") for name in expected}
    for name, flags in expected.items():
        result = finish(processes[name])
        assert result.returncode == 0, result.stderr[-2000:]
        for flag in flags:
            assert flag in result.stdout, (name, flag)


TINY = ["--preset=digits_tiny", "--seed=0", "--num_synthetic=200", "--eval_epochs=2", "--log_every_seconds=1000"]


def _kill_after_step(process, ledger, step):
    """SIGKILLs `process` once its privacy ledger records `step` started; returns the ledger's count then."""
    deadline = time.time() + 240
    while process.poll() is None and time.time() < deadline:
        try:
            if json.loads(ledger.read_text())["started_steps"] >= step:
                break
        except (OSError, ValueError):  # not written yet
            pass
        time.sleep(0.01)
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return json.loads(ledger.read_text())["started_steps"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """digits_tiny runs: `full` without interruption; `resumed` stopped after one step, then resumed;
    `killed` SIGKILLed after its second step started, before any checkpoint, then resumed."""
    root = tmp_path_factory.mktemp("runs")
    full, resumed, killed = root / "full", root / "resumed", root / "killed"
    first = [start("train_datalens.py", *TINY, f"--run_dir={full}"),
             start("train_datalens.py", *TINY, f"--run_dir={resumed}", "--max_train_seconds=0.001"),
             start("train_datalens.py", *TINY, f"--run_dir={killed}", "--checkpoint_minutes=1000")]
    killed_started = _kill_after_step(first[2], killed / "privacy_ledger.json", 2)
    assert not list((killed / "checkpoints").glob("ckpt-*.index"))  # every started step was lost
    results = {"full": finish(first[0]), "stopped": finish(first[1])}
    again = [start("train_datalens.py", "--resume", f"--run_dir={d}", "--seed=0", "--log_every_seconds=1000")
             for d in (resumed, killed)]
    results["resumed"], results["killed"] = (finish(p) for p in again)
    for result in results.values():
        assert result.returncode == 0, result.stderr[-3000:]
    return full, resumed, results, (killed, killed_started)


def test_train_app_writes_the_run_directory(runs, tensorboard_scalars):
    full, _, results, _ = runs
    summary = json.loads((full / "summary.json").read_text())
    for field in ("accuracy", "accuracy_honest", "epsilon", "delta", "generator_steps", "record_queries",
                  "accountant", "wall_seconds", "machine", "preset", "hyper_parameters", "utility"):
        assert field in summary, field
    preset = get_preset("digits_tiny")
    assert summary["preset"] == "digits_tiny" and summary["machine"]["cores"] == os.cpu_count()
    assert summary["machine"]["teacher_convolution"] in ("grouped", "im2col") and isinstance(summary["machine"]["isa"], list)
    assert 0 < summary["epsilon"] <= summary["target_epsilon"] == preset.epsilon
    assert summary["delta"] == preset.delta and summary["accountant"] == preset.accountant
    # The budget is spent: exactly the steps it allows, each `batch_size` record-queries.
    assert summary["generator_steps"] == summary["max_generator_steps"] > 0
    assert summary["record_queries"] == summary["generator_steps"] * preset.batch_size
    assert summary["hyper_parameters"]["num_synthetic"] == 200 and summary["hyper_parameters"]["sigma"] == preset.sigma
    assert summary["synthetic_records"] == dict(generated=200, kept=200)  # no filter by default
    utility = summary["utility"]
    assert summary["accuracy"] == utility["max_test_accuracy"] and len(utility["history"]) == 2
    assert summary["accuracy_honest"] == utility["honest_accuracy"]
    # Where the wall time went: the parts add up to it, checkpoints counted as train_state.json sums them.
    parts, state = summary["time_breakdown"], json.loads((full / "train_state.json").read_text())
    assert set(parts) == {"before_training", "training_steps", "checkpoints", "generation", "filtering", "utility"}
    assert min(parts.values()) >= 0 and sum(parts.values()) == pytest.approx(summary["wall_seconds"], abs=0.3)
    assert state["checkpoint_seconds"] > 0 and parts["checkpoints"] == round(state["checkpoint_seconds"], 1)
    assert parts["before_training"] == round(state["setup_seconds"], 1)
    # Peak memory: this process's VmHWM, at least what the last checkpoint recorded.
    assert 0.1 < state["peak_rss_gb"] and round(state["peak_rss_gb"], 2) <= summary["peak_rss_gb"] < 64

    synthetic = np.load(full / "synthetic.npz")
    assert synthetic["x"].shape == (200, 8, 8, 1) and synthetic["x"].dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(synthetic["y"]), np.full(10, 20))
    rows = (full / "history.csv").read_text().splitlines()
    assert rows[0] == "generator_steps,epsilon,d_loss,g_loss,votes_kept"
    steps, epsilons = zip(*[(int(r.split(",")[0]), float(r.split(",")[1])) for r in rows[1:]])
    assert steps[-1] == summary["generator_steps"] and list(steps) == sorted(steps)
    assert list(epsilons) == sorted(epsilons) and epsilons[-1] == pytest.approx(summary["epsilon"])
    assert tensorboard_scalars(full / "tensorboard", "epsilon") == pytest.approx(dict(zip(steps, epsilons)))
    grid = np.asarray(Image.open(full / "samples.png"))
    assert grid.shape[0] == 2 * (10 * 9 + 1)  # 10 rows of 8-pixel images, 1-pixel padding, scale 2
    assert (full / "generator.keras").exists() and list((full / "checkpoints").glob("ckpt-*.index"))
    assert Image.open(full / "training.png").size[0] > 5 * Image.open(full / "training.png").size[1]  # 5 panels
    out = results["full"].stdout
    assert "epsilon spent" in out and "utility on real digits test" in out and str(full / "samples.png") in out
    assert f"curves: {full / 'training.png'}" in out
    assert "wall time: " in out and "min (before training " in out and ", utility " in out
    assert f"peak memory {summary['peak_rss_gb']:.1f} GB" in out
    assert "teacher pre-training step 2/2" in out and "pre-training" not in results["resumed"].stdout


def test_resumed_run_equals_an_uninterrupted_one(runs, tensorboard_scalars):
    full, resumed, results, _ = runs
    assert "stopped after --max_train_seconds at step 1/" in results["stopped"].stdout
    assert f"curves so far: {resumed / 'training.png'}" in results["stopped"].stdout
    assert "1 already spent" in results["resumed"].stdout
    a, b = (json.loads((d / "summary.json").read_text()) for d in (full, resumed))
    assert a["generator_steps"] == b["generator_steps"] and a["epsilon"] == b["epsilon"] <= a["target_epsilon"]
    # Both parts' start-up and checkpoints are in the time breakdown, whose parts add up to the wall time.
    parts = b["time_breakdown"]
    assert min(parts.values()) >= 0 and sum(parts.values()) == pytest.approx(b["wall_seconds"], abs=0.3)
    assert b["peak_rss_gb"] > 0.1
    # TensorBoard's curves continue across the parts: steps counted in generator steps, not in fit's epochs.
    rows = [row.split(",") for row in (resumed / "history.csv").read_text().splitlines()[1:]]
    curve = tensorboard_scalars(resumed / "tensorboard", "epsilon")
    assert len(list((resumed / "tensorboard").glob("events.out.tfevents.*"))) == 2  # one per part
    assert curve == pytest.approx({int(r[0]): float(r[1]) for r in rows}) and max(curve) == b["generator_steps"]
    # Generator, teachers, optimizers and RNG states all continue: the same synthetic data, bit for bit.
    np.testing.assert_array_equal(np.load(full / "synthetic.npz")["x"], np.load(resumed / "synthetic.npz")["x"])


def test_train_app_refuses_unsafe_restarts(runs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(runs[0], run_dir)
    before = json.loads((run_dir / "summary.json").read_text())
    ramp = start("train_datalens.py", *TINY, f"--run_dir={tmp_path / 'ramp'}", "--sigma_end=80", "--accountant=pld",
                 "--max_train_seconds=0.001")
    changed = run_app("train_datalens.py", "--resume", f"--run_dir={run_dir}", "--sigma=1")
    assert changed.returncode != 0 and "cannot change ['sigma']" in changed.stderr
    for flag in ("--sigma_end=80", "--ramp_steps=3"):  # the noise schedule is part of the mechanism
        changed = run_app("train_datalens.py", "--resume", f"--run_dir={run_dir}", flag)
        assert changed.returncode != 0 and f"cannot change ['{flag[2:].split('=')[0]}']" in changed.stderr
    # A ramp's length is fixed when the run starts, so a resumed run cannot stretch it by raising --epsilon.
    result = finish(ramp)
    assert result.returncode == 0 and "stopped after --max_train_seconds at step 1/" in result.stdout, result.stderr[-2000:]
    config = json.loads((tmp_path / "ramp" / "config.json").read_text())["config"]
    expected = get_preset("digits_tiny").replace(sigma_end=80.0, accountant="pld").noise_schedule()
    assert (config["sigma_end"], config["ramp_steps"]) == (80.0, expected.steps) and expected.steps > 12
    allowed = PrivacyAccountant("pld").max_steps(  # the ramp, then as many steps at sigma_end as still fit
        lambda n: expected.dp_event(n, lambda sigma: topagg_dp_event(10, sigma, 16)), 12.0, 1e-5)
    assert f"at step 1/{allowed};" in result.stdout and allowed >= expected.steps
    again = run_app("train_datalens.py", *TINY, f"--run_dir={run_dir}")
    assert again.returncode != 0 and "already holds a run" in again.stderr
    # The budget is spent: resuming trains nothing more and reports the same epsilon.
    # Post-processing may change on resume: here the own-label filter keeps half of each class.
    unfiltered = np.load(run_dir / "synthetic.npz")["x"]
    more = run_app("train_datalens.py", "--resume", f"--run_dir={run_dir}", "--seed=0", "--eval_epochs=1",
                   "--filter_keep_fraction=0.5")
    assert more.returncode == 0, more.stderr[-2000:]
    assert "no training" in more.stdout and "own-label filter: kept 100 of 200 records" in more.stdout
    after = json.loads((run_dir / "summary.json").read_text())
    assert (after["generator_steps"], after["epsilon"]) == (before["generator_steps"], before["epsilon"])
    assert after["synthetic_records"] == dict(generated=200, kept=100) and after["time_breakdown"]["filtering"] > 0
    assert after["utility"]["config"]["num_train"] + after["utility"]["config"]["num_holdout"] == 100
    filtered = np.load(run_dir / "synthetic.npz")
    np.testing.assert_array_equal(np.bincount(filtered["y"]), np.full(10, 10))
    assert {r.tobytes() for r in filtered["x"]} <= {r.tobytes() for r in unfiltered}  # the same seeded records
    # A bad value fails at once, before any training.
    bad = run_app("train_datalens.py", *TINY, f"--run_dir={tmp_path / 'bad'}", "--filter_keep_fraction=1.5")
    assert bad.returncode != 0 and "filter_keep_fraction" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad" / "config.json").exists()


def test_a_killed_run_is_charged_for_its_steps_after_the_last_checkpoint(runs):
    _, _, results, (run_dir, started) = runs
    assert started >= 2
    assert f"{started} already spent ({started} for steps lost between checkpoints)" in results["killed"].stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["lost_steps_charged"] == started
    assert summary["generator_steps"] == summary["max_generator_steps"] and summary["epsilon"] <= summary["target_epsilon"]
    ledger = json.loads((run_dir / "privacy_ledger.json").read_text())
    assert ledger == dict(started_steps=summary["generator_steps"], lost_steps=started)


def test_train_app_stops_with_its_steps_saved_when_the_disk_has_no_room_for_the_next_checkpoint(tmp_path):
    """With the disk full (faked) after its first checkpoint, a run stops there with nothing lost, a resume
    refuses to start while it stays full, and with room the run finishes as if never stopped."""
    full_disk = ("import runpy, shutil, sys, types\n"
                 "shutil.disk_usage = lambda path: types.SimpleNamespace(total=1 << 40, used=1 << 40, free=0)\n"
                 f"sys.path.insert(0, {os.path.join(ROOT, 'apps')!r})\n"
                 f"sys.argv[0] = {os.path.join(ROOT, 'apps', 'train_datalens.py')!r}\n"
                 "runpy.run_path(sys.argv[0], run_name='__main__')")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run_dir = tmp_path / "run"
    ledger = run_dir / "privacy_ledger.json"
    stopped = subprocess.run([sys.executable, "-c", full_disk, *TINY, f"--run_dir={run_dir}", "--checkpoint_minutes=0"],
                             capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert stopped.returncode == 1 and "stopped at step 1/" in stopped.stderr, stopped.stderr[-2000:]
    assert "its checkpoint saved: No room for the next checkpoint in" in stopped.stderr
    assert f"continue with: --run_dir={run_dir} --resume" in stopped.stderr
    assert json.loads(ledger.read_text()) == dict(started_steps=1, lost_steps=0)
    assert (run_dir / "checkpoints" / "ckpt-1.index").exists() and not (run_dir / "summary.json").exists()
    refused = subprocess.run([sys.executable, "-c", full_disk, "--resume", f"--run_dir={run_dir}", "--seed=0"],
                             capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert refused.returncode == 1 and "free disk space, then resume again (nothing was spent)" in refused.stderr
    assert json.loads(ledger.read_text()) == dict(started_steps=1, lost_steps=0)
    finished = run_app("train_datalens.py", "--resume", f"--run_dir={run_dir}", "--seed=0", "--log_every_seconds=1000")
    assert finished.returncode == 0, finished.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["lost_steps_charged"] == 0 and summary["generator_steps"] == summary["max_generator_steps"]
    assert summary["epsilon"] <= summary["target_epsilon"]


def test_generate_app_samples_the_saved_generator(runs, tmp_path):
    full, _, _, _ = runs
    out, filtered = tmp_path / "gen" / "s.npz", tmp_path / "gen" / "f.npz"
    processes = [start("generate.py", f"--generator={full / 'generator.keras'}", "--num=30", f"--out={out}", "--seed=3"),
                 start("generate.py", f"--generator={full / 'generator.keras'}", "--num=30", f"--out={filtered}",
                       "--seed=3", "--filter_keep_fraction=0.5", "--grid=none")]
    for result in map(finish, processes):
        assert result.returncode == 0, result.stderr[-2000:]
    sample = np.load(out)
    assert sample["x"].shape == (30, 8, 8, 1) and sample["x"].dtype == np.uint8
    np.testing.assert_array_equal(sample["y"], np.arange(30) % 10)
    assert np.asarray(Image.open(tmp_path / "gen" / "s.png")).shape[0] == 2 * (10 * 9 + 1)
    # The filter keeps ceil(0.5 * 3) = 2 of each class's 3 records, out of the same seeded sample.
    kept = np.load(filtered)
    np.testing.assert_array_equal(np.bincount(kept["y"]), np.full(10, 2))
    assert {r.tobytes() for r in kept["x"]} <= {r.tobytes() for r in sample["x"]}
    assert not (tmp_path / "gen" / "f.png").exists()


def test_evaluate_app_writes_both_protocols(tmp_path):
    (x, y), _ = data.load("digits")
    np.savez(tmp_path / "syn.npz", x=x, y=y)
    out = tmp_path / "utility.json"
    result = run_app("evaluate.py", f"--data={tmp_path / 'syn.npz'}", "--dataset=digits", "--epochs=6",
                     "--batch_size=64", "--seed=0", f"--out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["dataset"] == "digits" and len(report["history"]) == 6
    assert report["max_test_accuracy"] == max(h["test_accuracy"] for h in report["history"])
    assert report["honest_selection"] == "synthetic_holdout"
    assert report["honest_accuracy"] > 0.3  # real digits as "synthetic" data: far above chance (0.1)
    assert "paper protocol" in result.stdout
    assert report["filter"] == dict(keep_fraction=1.0, epochs=2, records=len(x), kept=len(x))
    filtered = run_app("evaluate.py", f"--data={tmp_path / 'syn.npz'}", "--dataset=digits", "--epochs=1",
                       "--seed=0", f"--out={out}", "--filter_keep_fraction=0.5", "--filter_epochs=1")
    assert filtered.returncode == 0, filtered.stderr[-2000:]
    report = json.loads(out.read_text())
    kept = sum(math.ceil(0.5 * n) for n in np.bincount(y))
    assert report["filter"] == dict(keep_fraction=0.5, epochs=1, records=len(x), kept=kept)
    assert report["config"]["num_train"] + report["config"]["num_holdout"] == kept
    bad = run_app("evaluate.py", f"--data={tmp_path / 'syn.npz'}", "--filter_keep_fraction=0")
    assert bad.returncode != 0 and "--filter_keep_fraction must be in (0, 1]" in bad.stderr


def _grouped_after(imports):
    """Whether grouped convolutions are usable after `imports`, in a fresh process without TF_ENABLE_ONEDNN_OPTS."""
    code = (f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'apps')!r})\n{imports}\n"
            "from dlens_tf.models.teachers import grouped_convolution_supported\n"
            "print(grouped_convolution_supported('float32'))")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()[-1] == "True"


def test_datalens_app_gets_the_fast_teacher_kernels():
    """TF fixes its kernels when it loads, so the app must import dlens_tf (which turns oneDNN on) first."""
    assert _grouped_after("import train_datalens") == _grouped_after(
        "import os; os.environ['TF_ENABLE_ONEDNN_OPTS'] = '1'; import tensorflow")


def test_teacher_agreement_app_measures_and_rejects_bad_counts():
    good = start("teacher_agreement.py", "--preset=digits_tiny", "--num_teachers=10", "--teacher_steps=0,2",
                 "--shared_init=true")
    bad = [start("teacher_agreement.py", "--preset=digits_tiny", *args)
           for args in (["--teacher_steps=two"], ["--num_teachers=200"])]
    result = finish(good)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if "agreement=" in line]
    assert [f"shared_init=True teacher_steps={s}:" in line for s, line in zip((0, 2), lines)] == [True, True]
    assert all(0.0 <= float(line.split("agreement=")[1].split()[0]) <= 1.0 for line in lines)
    for process, message in zip(bad, ("expected integer counts >= 0", "exceeds the 1497 records")):
        result = finish(process)
        assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]


def test_datalens_proxy_moving_averages_follow_the_generator_and_leave_it_untouched(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "apps"))
    import datalens_proxy

    class Scorer:  # records what it scores; every sample gets class 0
        def predict(self, x, verbose=0):
            self.seen = x
            return np.eye(3)[np.zeros(len(x), int)]

    generator = Generator(z_dim=4, num_classes=3, image_shape=(8, 8, 1), dense_units=8, filters=4)
    generator.build()
    model = types.SimpleNamespace(generator=generator, generate=generator.sample)
    callback = datalens_proxy._Fidelity(Scorer(), 1, 6, 0, 0.0, ema_momenta=(0.0, 0.75))
    callback.set_model(model)
    rng = np.random.default_rng(0)
    history = [[w.numpy() for w in generator.weights]]
    callback.on_train_begin()
    for step in range(2):  # two "steps": new weights (batch-norm variances positive), then the callback
        for w in generator.weights:
            value = rng.normal(0.0, 0.3, w.shape)
            w.assign((np.abs(value) + 0.5 if "variance" in w.name else value).astype(np.float32))
        history.append([w.numpy() for w in generator.weights])
        callback.on_train_batch_end(step)
    w0, w1, w2 = history
    twice_averaged = [0.75 * (0.75 * a + 0.25 * b) + 0.25 * c for a, b, c in zip(w0, w1, w2)]
    for average, expected in ((callback.averages[0.0], w2), (callback.averages[0.75], twice_averaged)):
        for a, e in zip(average, expected):
            np.testing.assert_allclose(a, e, rtol=1e-6)
    for w, e in zip(generator.weights, callback.averages[0.75]):
        w.assign(e)
    from_average = datalens_proxy.to_float(generator.sample(6, seed=0)[0])
    for w, value in zip(generator.weights, w2):
        w.assign(value)
    callback._score_average(0.75)
    assert np.ptp(from_average) > 0.5  # samples that depend on the weights
    np.testing.assert_array_equal(callback.scorer.seen, from_average)  # it scored the averaged generator's samples
    for w, value in zip(generator.weights, w2):  # and put the generator back
        np.testing.assert_array_equal(w.numpy(), value)


def test_datalens_proxy_app_scores_samples_and_rejects_bad_counts():
    good = start("datalens_proxy.py", "--preset=digits_tiny", "--proxy_teachers=5", "--steps=3", "--eval_every=2",
                 "--samples=40", "--ema_momentum=0,0.5")
    ramp = start("datalens_proxy.py", "--preset=digits_tiny", "--proxy_teachers=5", "--sigma_end=20", "--eval_every=100",
                 "--samples=40")
    bad = [start("datalens_proxy.py", "--preset=digits_tiny", *args)
           for args in (["--proxy_teachers=11"], ["--proxy_teachers=5", "--eval_every=0"], ["--proxy_teachers=5", "--steps=0"],
                        ["--generator_beta_1=high"], ["--proxy_teachers=5", "--ema_momentum=0.5,1"])]
    result = finish(good)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert "5 teachers x 149 records, sigma 20 (full: 10 x 149, sigma 40)" in lines[0], lines[0]
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split(":")[0] for line in steps] == ["step 2", "step 3"]  # every 2 steps and at the end
    fidelity = float(lines[-1].split("proxy fidelity=")[1])
    assert 0.0 <= fidelity <= 1.0 and f"fidelity={fidelity:.3f}" in steps[-1]
    for line in steps:  # a moving average with momentum 0 is the current generator
        assert line.split("fidelity=")[1].split()[0] == line.split("ema0=")[1].split()[0], line
        assert " ema0.5=" in line, line
    result, steps = finish(ramp), get_preset("digits_tiny").replace(sigma_end=20.0).noise_schedule().steps
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"sigma 20 (full: 10 x 149, sigma 40 to 20 over {steps} steps)" in result.stdout.splitlines()[0]
    assert [line.split(":")[0] for line in result.stdout.splitlines() if line.startswith("step ")] == [f"step {steps}"]
    for process, message in zip(bad, ("--proxy_teachers: expected 1 to 10", "--eval_every, --samples and --steps",
                                      "--eval_every, --samples and --steps",
                                      "--generator_beta_1: expected a number or 'none'. Received: 'high'",
                                      "--ema_momentum: expected numbers in [0, 1). Received: ['0.5', '1']")):
        result = finish(process)
        assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
