"""DPModel: per-example gradients, clipping, the private step, accounting hooks and bad input."""

import numpy as np
import pytest
import tensorflow as tf
from tensorflow import keras
from tensorflow.python.ops.parallel_for import pfor

import dlens_tf
from dlens_tf.models import DPModel, make_private
from dlens_tf.models.per_example import clip_jointly, per_example_gradients
from dlens_tf.privacy.sampling import private_batches

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def conv_net(seed=0):
    init = keras.initializers.GlorotUniform(seed)
    return keras.Sequential([
        keras.Input((9, 9, 2)),
        keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="tanh", kernel_initializer=init),
        keras.layers.Conv2D(3, 2, padding="valid", dilation_rate=2, activation="relu", kernel_initializer=init),
        keras.layers.MaxPool2D(2, 1),
        keras.layers.Flatten(),
        keras.layers.Dense(5, kernel_initializer=init, bias_initializer=keras.initializers.RandomNormal(seed=seed)),
    ])


def data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 9, 9, 2)).astype(np.float32), rng.integers(0, 5, n)


def test_per_example_gradients_equal_a_loop_of_single_example_gradients():
    model, (x, y) = conv_net(), data()
    stock_rule = pfor._pfor_converter_registry["Conv2DBackpropFilter"]
    grads, predictions, losses = tf.function(lambda a, b: per_example_gradients(model, LOSS.call, a, b))(x, y)
    assert pfor._pfor_converter_registry["Conv2DBackpropFilter"] is stock_rule  # our batched rule was scoped
    np.testing.assert_allclose(predictions.numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    for i in range(len(x)):
        with tf.GradientTape() as tape:
            loss = LOSS(y[i:i + 1], model(x[i:i + 1]))
        expected = tape.gradient(loss, model.trainable_variables)
        assert losses[i].numpy() == pytest.approx(loss.numpy(), rel=1e-5)
        for g, e in zip(grads, expected):
            np.testing.assert_allclose(g[i].numpy(), e.numpy(), rtol=1e-4, atol=1e-6)


def test_clipping_bounds_every_norm_and_leaves_small_rows_alone():
    rng = np.random.default_rng(1)
    scales = np.array([1e-4, 0.3, 1.0, 7.0, 1e6])[:, None, None]
    grads = [tf.constant(rng.standard_normal((5, 3, 4)) * scales, tf.float32),
             tf.constant(rng.standard_normal((5, 6))[:, :, None][:, :, 0] * scales[:, :, 0], tf.float32)]
    clipped, norms = clip_jointly(grads, 1.0)
    flat = np.concatenate([g.numpy().reshape(5, -1) for g in grads], axis=1)
    np.testing.assert_allclose(norms.numpy(), np.linalg.norm(flat, axis=1), rtol=1e-5)
    out = np.linalg.norm(clipped.numpy(), axis=1)
    assert np.all(out <= 1.0 * (1 + 1e-6))
    small = norms.numpy() <= 1.0
    np.testing.assert_allclose(clipped.numpy()[small], flat[small], rtol=1e-6)
    np.testing.assert_allclose(out[~small], 1.0, rtol=1e-5)


def _fit_once(mechanism, jit_compile, steps=2, **kwargs):
    x, y = data(64)
    model = make_private(conv_net(), mechanism=mechanism, l2_norm_clip=0.5, noise_multiplier=0.7,
                         batch_size=16, num_examples=64, seed=3, **kwargs)
    model.compile(keras.optimizers.SGD(0.1), loss=LOSS, metrics=["accuracy"], jit_compile=jit_compile)
    model.fit(private_batches(x, y, 16, seed=1).take(steps), epochs=1, verbose=0)
    return model


@pytest.mark.parametrize("mechanism,kwargs", [
    ("gaussian", {}), ("topagg", {"rate": 0.05, "beta": 0.1}), ("topk", {"rate": 0.1, "noise_placement": "before"}),
    ("randk", {"rate": 0.1, "noise_placement": "before"}), ("lowrank", {"rank": 1, "noise_placement": "before"}),
])
def test_xla_step_equals_the_graph_step(mechanism, kwargs):
    a = _fit_once(mechanism, jit_compile=False, **kwargs)
    b = _fit_once(mechanism, jit_compile=True, **kwargs)
    assert int(a.privacy_steps.numpy()) == int(b.privacy_steps.numpy()) == 2
    moved = False
    for va, vb, v0 in zip(a.model.trainable_variables, b.model.trainable_variables, conv_net().trainable_variables):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-3, atol=1e-4)
        moved = moved or not np.allclose(va.numpy(), v0.numpy())
    assert moved


def test_gaussian_update_is_noisy_mean_of_clipped_gradients():
    """With z = 0 the applied update is exactly sum(clip(g_i)) / B, padding rows excluded."""
    x, y = data(10)
    mask = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1], np.float32)
    base = conv_net()
    model = make_private(base, l2_norm_clip=0.05, noise_multiplier=0.0, batch_size=8, num_examples=100, seed=0)
    model.compile(keras.optimizers.SGD(1.0), loss=LOSS)
    before = [v.numpy() for v in base.trainable_variables]
    grads, _, _ = per_example_gradients(base, LOSS.call, tf.constant(x), tf.constant(y))
    clipped, _ = clip_jointly(grads, 0.05)
    expected = (clipped.numpy() * mask[:, None]).sum(0) / 8.0
    model.train_on_batch(x, y, sample_weight=mask)
    applied = np.concatenate([(b - v.numpy()).ravel() for b, v in zip(before, base.trainable_variables)])
    np.testing.assert_allclose(applied, expected, rtol=1e-4, atol=1e-7)
    assert int(model.privacy_steps.numpy()) == 1


def test_topagg_update_is_a_learning_rate_scaled_vote():
    x, y = data(16)
    base = conv_net()
    model = make_private(base, mechanism="topagg", noise_multiplier=0.5, batch_size=16, num_examples=64, seed=0, rate=0.05)
    model.compile(keras.optimizers.SGD(0.01), loss=LOSS)
    before = np.concatenate([v.numpy().ravel() for v in base.trainable_variables])
    model.train_on_batch(x, y)
    after = np.concatenate([v.numpy().ravel() for v in base.trainable_variables])
    assert set(np.round((before - after) / 0.01, 4)) <= {-1.0, 0.0, 1.0}


def test_dp_event_and_budget_callback():
    x, y = data(64)
    model = make_private(conv_net(), noise_multiplier=2.0, batch_size=8, num_examples=64, seed=0)
    model.compile(keras.optimizers.SGD(0.1), loss=LOSS)
    event = model.dp_event_per_step()
    assert event == dlens_tf.privacy.mechanisms.GaussianMechanism(1.0, 2.0).dp_event(0.125)
    budget = dlens_tf.PrivacyBudget(epsilon=3.0, delta=1e-5)
    model.fit(private_batches(x, y, 8, seed=0), epochs=50, verbose=0, callbacks=[budget])
    steps = int(model.privacy_steps.numpy())
    assert 0 < steps < 200 and steps == budget.max_steps
    assert budget.epsilon_after(steps) <= 3.0 < budget.epsilon_after(steps + 1)
    shuffle = make_private(conv_net(), noise_multiplier=1.0, batch_size=16, num_examples=64, sampling="shuffle")
    assert shuffle.dp_event_per_step() == dlens_tf.privacy.mechanisms.GaussianMechanism(1.0, 1.0).dp_event(None)


def test_poisson_batches_are_padded_masks_of_the_right_rate():
    x, y = np.arange(1000, dtype=np.float32)[:, None], np.arange(1000)
    sizes, seen = [], np.zeros(1000)
    for xb, yb, mask in private_batches(x, y, 50, seed=0, pad_to=16):
        n = int(mask.numpy().sum())
        assert xb.shape[0] % 16 == 0 and xb.shape[0] >= n and np.all(mask.numpy()[:n] == 1) and np.all(mask.numpy()[n:] == 0)
        assert len(set(yb.numpy()[:n])) == n
        sizes.append(n)
        seen[yb.numpy()[:n]] += 1
    assert len(sizes) == 20 and np.std(sizes) > 0  # Poisson: sizes vary
    assert abs(np.mean(sizes) - 50) < 4 * np.sqrt(50 / 20)
    shuffled = [yb.numpy() for _, yb, _ in private_batches(x, y, 300, sampling="shuffle", seed=0)]
    assert [len(b) for b in shuffled] == [300, 300, 300, 100]
    assert sorted(np.concatenate(shuffled)) == list(range(1000))


def test_config_round_trip():
    model = make_private(conv_net(), mechanism="lowrank", noise_multiplier=0.9, batch_size=16, num_examples=64,
                         seed=5, rank=2, noise_placement="before")
    again = DPModel.from_config(model.get_config())
    assert again.get_config()["mechanism"] == model.get_config()["mechanism"]
    assert again.dp_event_per_step() == model.dp_event_per_step()


@pytest.mark.parametrize("kwargs,argument", [
    ({"l2_norm_clip": 0.0}, "l2_norm_clip"),
    ({"l2_norm_clip": -2.0}, "l2_norm_clip"),
    ({"batch_size": 65, "num_examples": 64}, "batch_size"),
    ({"batch_size": 0}, "batch_size"),
    ({"num_examples": 0}, "num_examples"),
    ({"mechanism": "gausian"}, "mechanism"),
    ({"sampling": "uniform"}, "sampling"),
    ({"seed": 1.5}, "seed"),
])
def test_bad_arguments_raise_clear_errors(kwargs, argument):
    args = dict(batch_size=16, num_examples=64)
    args.update(kwargs)
    with pytest.raises(ValueError, match=f"`{argument}`"):
        make_private(conv_net(), **args)


def test_models_without_trainable_weights_are_refused():
    frozen = conv_net()
    frozen.trainable = False
    for model in (frozen, keras.Sequential([keras.layers.Dense(3)]), keras.Sequential([keras.Input((4,)), keras.layers.Flatten()])):
        with pytest.raises(ValueError, match="`model`.*(not built|no trainable weights)"):
            make_private(model, batch_size=16, num_examples=64)


def test_experiment_spends_at_most_its_budget_and_logs_epsilon_to_tensorboard(tmp_path, tensorboard_scalars):
    from dlens_tf.experiments.dpsgd import DPSGDExperiment

    summary = DPSGDExperiment(dataset="digits", epsilon=3.0, epochs=2, batch_size=64, learning_rate=0.5,
                              tensorboard_dir=str(tmp_path)).run()
    assert 0 < summary["epsilon_spent"] <= 3.0 and summary["privacy_steps"] > 0
    assert summary["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    curve = tensorboard_scalars(tmp_path / "train", "epoch_epsilon")
    assert sorted(curve) == [0, 1] and curve[0] < curve[1] == pytest.approx(summary["epsilon_spent"], rel=1e-5)
