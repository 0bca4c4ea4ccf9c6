"""PrivacyBudget: halts before overshooting, logs epsilon, survives resume."""

import csv
import json

import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras

from dlens_tf import PrivacyAccountant, PrivacyBudget
from dlens_tf.callbacks import BudgetExhaustedError
from dlens_tf.models import PrivateModel

NOISE_MULTIPLIER = 10.0


class NoisyRegression(PrivateModel):
    """Clipped, noised full-batch gradient descent: one Gaussian query per step."""

    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1)

    def call(self, x):
        return self.dense(x)

    def dp_event_per_step(self):
        return dp_accounting.GaussianDpEvent(NOISE_MULTIPLIER)

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((self(x) - y) ** 2)
        grads = tape.gradient(loss, self.trainable_variables)
        grads, _ = tf.clip_by_global_norm(grads, 1.0)
        grads = [g + tf.random.normal(tf.shape(g), stddev=NOISE_MULTIPLIER) for g in grads]
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.count_private_step()
        return {"loss": loss}


def _data(n=64):
    x = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    return x, x.sum(1, keepdims=True)


def _model(**compile_kwargs):
    model = NoisyRegression()
    model.compile(optimizer=keras.optimizers.SGD(0.01), **compile_kwargs)
    model(np.zeros([1, 3], np.float32))
    return model


def _eps(steps, accountant="rdp"):
    return PrivacyAccountant(accountant).compose(dp_accounting.GaussianDpEvent(NOISE_MULTIPLIER), steps).get_epsilon(1e-5)


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_fit_stops_before_the_step_that_would_exceed(accountant, tmp_path):
    x, y = _data()
    model, budget = _model(), PrivacyBudget(epsilon=3.0, delta=1e-5, accountant=accountant)
    log = tmp_path / "log.csv"
    history = model.fit(x, y, batch_size=8, epochs=100, verbose=0, callbacks=[budget, keras.callbacks.CSVLogger(str(log))])
    steps = int(model.privacy_steps.numpy())
    assert steps == budget.max_steps > 0
    assert _eps(steps, accountant) <= 3.0 < _eps(steps + 1, accountant)
    per_batch = [eps for _, eps in budget.history]
    assert per_batch == sorted(per_batch) and per_batch[-1] <= 3.0
    assert history.history["epsilon"] == sorted(history.history["epsilon"])
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["epsilon"]) == pytest.approx(_eps(steps, accountant))


def test_steps_per_execution_never_overshoots():
    x, y = _data()
    model = _model(steps_per_execution=4)
    budget = PrivacyBudget(epsilon=3.0, delta=1e-5)
    model.fit(x, y, batch_size=8, epochs=100, verbose=0, callbacks=[budget])
    steps = int(model.privacy_steps.numpy())
    assert steps <= budget.max_steps < steps + 4


def test_resume_continues_the_accountant(tmp_path):
    x, y = _data()
    first = _model()
    first.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[PrivacyBudget(3.0, 1e-5)])
    assert int(first.privacy_steps.numpy()) == 16
    first.save_weights(str(tmp_path / "ckpt"))

    resumed = _model()
    resumed.load_weights(str(tmp_path / "ckpt"))
    budget = PrivacyBudget(3.0, 1e-5)
    resumed.fit(x, y, batch_size=8, epochs=100, verbose=0, callbacks=[budget])
    total = int(resumed.privacy_steps.numpy())
    assert budget.history[0] == (17, pytest.approx(_eps(17)))  # epsilon did not reset
    assert total == budget.max_steps
    assert budget.history[-1][1] == pytest.approx(_eps(total)) and _eps(total) <= 3.0

    with pytest.raises(BudgetExhaustedError, match="already spent"):
        resumed.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[PrivacyBudget(3.0, 1e-5)])
    assert int(resumed.privacy_steps.numpy()) == total


def test_ledger_charges_the_steps_a_killed_process_ran_after_its_checkpoint(tmp_path):
    x, y = _data()
    ledger = tmp_path / "ledger.json"
    first = _model()
    first.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[PrivacyBudget(3.0, 1e-5, ledger=ledger)])
    first.save_weights(str(tmp_path / "ckpt"))  # the last checkpoint: 8 steps
    first.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[PrivacyBudget(3.0, 1e-5, ledger=ledger)])
    assert int(first.privacy_steps.numpy()) == 16  # then the process dies: steps 9-16 are lost

    resumed = _model()
    resumed.load_weights(str(tmp_path / "ckpt"))
    assert int(resumed.privacy_steps.numpy()) == 8
    budget = PrivacyBudget(3.0, 1e-5, ledger=ledger)
    resumed.fit(x, y, batch_size=8, epochs=100, verbose=0, callbacks=[budget])
    assert budget.lost_steps == 8 and budget.history[0] == (17, pytest.approx(_eps(17)))
    total = int(resumed.privacy_steps.numpy())
    assert total == budget.max_steps and json.loads(ledger.read_text()) == dict(started_steps=total, lost_steps=8)


class _Interrupt(keras.callbacks.Callback):
    """Stands for a kill between the ledger write and the end of step `at` (1-based)."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_begin(self, batch, logs=None):
        if batch + 1 == self.at:
            raise KeyboardInterrupt


def test_ledger_is_on_disk_before_the_step_runs(tmp_path):
    x, y = _data()
    ledger = tmp_path / "ledger.json"
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0,
                  callbacks=[PrivacyBudget(3.0, 1e-5, ledger=ledger), _Interrupt(at=3)])
    assert int(model.privacy_steps.numpy()) == 2
    assert json.loads(ledger.read_text())["started_steps"] == 3  # charged although it may not have run
    budget = PrivacyBudget(3.0, 1e-5, ledger=ledger)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[budget])
    assert budget.lost_steps == 1 and budget.history[0][0] == 4


def test_unreadable_ledger_refuses_to_train(tmp_path):
    x, y = _data()
    ledger = tmp_path / "ledger.json"
    ledger.write_text('{"started_steps": 1')
    model = _model()
    with pytest.raises(ValueError, match="ledger .* unreadable"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[PrivacyBudget(3.0, 1e-5, ledger=ledger)])
    assert int(model.privacy_steps.numpy()) == 0


class _Sampler(PrivateModel):
    def __init__(self):
        super().__init__()
        self.rng = tf.random.Generator.from_seed(0)


def test_charged_steps_redraw_fresh_randomness():
    restored = _Sampler().rng.state.numpy()
    draws = {}
    for started in (0, 3, 5):  # the restored state, then two charges from it
        model = _Sampler()
        assert model.charge_lost_steps(started) == started and int(model.privacy_steps.numpy()) == started
        draws[started] = model.rng.normal([4]).numpy()
    assert len({tuple(d) for d in draws.values()}) == 3
    np.testing.assert_array_equal(restored, _Sampler().rng.state.numpy())
    model = _Sampler()
    model.charge_lost_steps(2)
    with pytest.raises(ValueError, match="below"):
        model.charge_lost_steps(1)


def test_budget_too_small_for_one_step_trains_nothing():
    x, y = _data()
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(BudgetExhaustedError):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[PrivacyBudget(1e-3, 1e-5)])
    assert int(model.privacy_steps.numpy()) == 0
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_model_without_dp_events_is_an_error():
    x, y = _data()
    model = keras.Sequential([keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="dp_event_per_step"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[PrivacyBudget(1.0, 1e-5)])


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(epsilon=0.0, delta=1e-5), "epsilon"), (dict(epsilon=-1, delta=1e-5), "epsilon"),
     (dict(epsilon=1.0, delta=0.0), "delta"), (dict(epsilon=1.0, delta=1.0), "delta"),
     (dict(epsilon=1.0, delta=1e-5, accountant="zcdp"), "accountant")],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        PrivacyBudget(**kwargs)


def _started_progress(tmp_path, monkeypatch, max_steps, spent, max_seconds):
    """(BudgetProgress on a stand-in budget and model, its model, its clock [seconds]), after on_train_begin."""
    from types import SimpleNamespace

    from dlens_tf.callbacks import progress

    clock = [1000.0]
    monkeypatch.setattr(progress.time, "time", lambda: clock[0])
    budget = SimpleNamespace(epsilon=1.0, delta=1e-5, accountant="pld", max_steps=max_steps, lost_steps=0,
                             budget_exhausted=False)
    model = SimpleNamespace(privacy_steps=tf.Variable(spent), stop_training=False)
    callback = progress.BudgetProgress(budget, every_seconds=0, max_seconds=max_seconds,
                                       csv_path=str(tmp_path / "h.csv"))
    callback.set_model(model)
    callback.on_train_begin()
    return callback, model, clock


def test_budget_progress_lines_eta_and_time_limit(tmp_path, monkeypatch, capsys):
    callback, model, clock = _started_progress(tmp_path, monkeypatch, max_steps=100, spent=10, max_seconds=300)
    assert "100 generator steps; 10 already spent." in capsys.readouterr().out
    model.privacy_steps.assign(20)  # 10 steps in 100 s: 10 s per step, 80 steps (800 s) left
    clock[0] += 100
    callback.on_train_batch_end(0, {"d_loss": 0.5})
    line = capsys.readouterr().out
    assert "step 20/100 d_loss=0.5 10.00 s/step, ETA 13.3 min, this part stops in 3.3 min" in line
    assert not model.stop_training
    model.privacy_steps.assign(30)
    clock[0] += 200  # the time limit
    callback.on_train_batch_end(1)
    assert "step 30/100 15.00 s/step, ETA 17.5 min, this part stops in 0.0 min" in capsys.readouterr().out
    assert model.stop_training and callback.stopped_for_time
    callback.on_epoch_end(0, {"epsilon": 0.5})
    rows = list(csv.DictReader(open(tmp_path / "h.csv")))
    assert rows == [{"generator_steps": "30", "epsilon": "0.5", "d_loss": "", "g_loss": "", "votes_kept": ""}]


def test_budget_progress_says_nothing_of_parts_when_the_budget_ends_first(tmp_path, monkeypatch, capsys):
    callback, model, clock = _started_progress(tmp_path, monkeypatch, max_steps=12, spent=0, max_seconds=3600)
    model.privacy_steps.assign(2)
    clock[0] += 10
    callback.on_train_batch_end(0)
    out = capsys.readouterr().out
    assert "ETA 0.8 min" in out and "this part" not in out and not model.stop_training
