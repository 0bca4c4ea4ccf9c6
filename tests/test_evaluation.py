"""dlens_tf.evaluation: the utility classifier, both accuracy protocols, and sample grids."""

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from dlens_tf.evaluation import (
    PAPER_PROTOCOL,
    evaluate_synthetic,
    image_grid,
    read_history,
    save_image_grid,
    save_training_plot,
    utility_classifier,
)


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    return x, d.target.astype(np.int64)


def test_classifier_is_the_official_architecture():
    model = utility_classifier((28, 28, 1), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Dropout", "Conv2D", "Dropout", "Flatten", "Dense", "Dense"]
    assert [model.layers[i].rate for i in (2, 4)] == [0.2, 0.25]
    assert model.output_shape == (None, 10)
    # 28 -> conv3 26 -> pool 13 -> conv3 11; parameters of each layer from the architecture.
    expected = (3 * 3 * 1 + 1) * 32 + (3 * 3 * 32 + 1) * 64 + (11 * 11 * 64 + 1) * 64 + (64 + 1) * 10
    assert model.count_params() == expected


def test_synthetic_utility_beats_chance_and_reports_both_protocols(digits):
    x, y = digits
    result = evaluate_synthetic(x[:1300], y[:1300], x[1300:], y[1300:], epochs=8, batch_size=64, seed=1)
    history = result.history
    assert [h["epoch"] for h in history] == list(range(1, 9))
    tests = [h["test_accuracy"] for h in history]
    holdouts = [h["holdout_accuracy"] for h in history]
    assert result.max_test_accuracy == max(tests)
    assert tests[result.max_test_epoch - 1] == result.max_test_accuracy
    assert result.honest_selection == "synthetic_holdout"
    assert result.honest_epoch == int(np.argmax(holdouts)) + 1
    assert result.honest_accuracy == tests[result.honest_epoch - 1] <= result.max_test_accuracy
    assert result.final_test_accuracy == tests[-1]
    assert result.honest_accuracy > 0.5  # chance is 0.1
    assert result.config["num_train"] == 1170 and result.config["num_holdout"] == 130
    assert result.config["num_test"] == len(x) - 1300
    as_dict = result.to_dict()
    assert as_dict["max_test_accuracy"] == result.max_test_accuracy and len(as_dict["history"]) == 8


def test_without_holdout_the_honest_figure_is_the_final_epoch(digits):
    x, y = digits
    # Float inputs in [0, 1] are accepted as well as uint8.
    result = evaluate_synthetic(
        x[:300] / 255.0, y[:300], x[1500:], y[1500:], epochs=3, batch_size=100, holdout_fraction=0.0,
        optimizer="sgd", learning_rate=0.05, seed=0,
    )
    assert result.honest_selection == "final_epoch"
    assert result.honest_epoch == 3 and result.honest_accuracy == result.final_test_accuracy
    assert all(h["holdout_accuracy"] is None for h in result.history)
    assert result.config["num_train"] == 300 and result.config["optimizer"] == "sgd"


def test_seeded_runs_repeat(digits):
    x, y = digits
    runs = [
        evaluate_synthetic(x[:400], y[:400], x[1600:], y[1600:], epochs=2, batch_size=64, seed=7).history
        for _ in range(2)
    ]
    np.testing.assert_allclose(
        [h["loss"] for h in runs[0]], [h["loss"] for h in runs[1]], rtol=1e-4
    )


def test_paper_protocol_is_the_official_one():
    assert PAPER_PROTOCOL == dict(optimizer="sgd", learning_rate=2e-3, batch_size=512, epochs=600)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(x_syn=np.zeros((0, 8, 8, 1), np.uint8), y_syn=np.zeros((0,), int)), "`x_syn`, expected at least one"),
        (dict(x_syn=np.zeros((10, 8, 8), np.uint8)), "`x_syn`, expected images shaped"),
        (dict(y_syn=np.arange(10) % 10 + 1), r"`y_syn`, expected labels in \[0, 10\)"),
        (dict(y_syn=np.eye(10, dtype=int)), "`y_syn`, expected integer labels shaped"),
        (dict(y_syn=np.zeros(10)), "`y_syn`, expected integer labels"),
        (dict(x_syn=np.full((10, 8, 8, 1), -0.5, np.float32)), r"`x_syn`, expected float pixels in \[0, 1\]"),
        (dict(x_test=np.zeros((5, 9, 9, 1), np.uint8)), "`x_test`, expected the image shape"),
        (dict(y_test=np.array([0, 1, 2, 3, -1])), "`y_test`, expected labels"),
        (dict(epochs=0), "`epochs`"),
        (dict(learning_rate=-1.0), "`learning_rate`"),
        (dict(optimizer="rmsprop"), "`optimizer`"),
        (dict(holdout_fraction=1.0), "`holdout_fraction`"),
    ],
)
def test_bad_input_is_rejected_with_the_argument_named(change, match):
    args = dict(
        x_syn=np.zeros((10, 8, 8, 1), np.uint8),
        y_syn=np.arange(10),
        x_test=np.zeros((5, 8, 8, 1), np.uint8),
        y_test=np.arange(5),
        epochs=1,
    )
    args.update(change)
    with pytest.raises(ValueError, match=match):
        evaluate_synthetic(**args)


def test_classifier_rejects_images_too_small_for_its_convolutions():
    with pytest.raises(ValueError, match="`input_shape`, expected height and width >= 8"):
        utility_classifier((7, 7, 1), 10)
    with pytest.raises(ValueError, match="`num_classes`"):
        utility_classifier((28, 28, 1), 1)


def test_image_grid_places_each_class_on_its_row():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, size=(25, 4, 5, 1), dtype=np.uint8)
    y = np.array([0] * 12 + [2] * 13)  # no sample of class 1
    grid = image_grid(x, y, num_classes=3, per_class=10, padding=1)
    assert grid.shape == (3 * 5 + 1, 10 * 6 + 1, 1) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[1:5, 1:6], x[0])  # row 0, column 0: first 0
    np.testing.assert_array_equal(grid[1:5, 1 + 9 * 6 : 6 + 9 * 6], x[9])  # row 0, column 9: tenth 0
    np.testing.assert_array_equal(grid[11:15, 1 + 6 : 6 + 6], x[13])  # row 2, column 1: second 2
    assert not grid[6:10].any()  # class 1 row stays black
    assert not grid[0].any() and not grid[:, 0].any()  # padding


def test_image_grid_accepts_float_images():
    x = np.linspace(0, 1, 2 * 8 * 8 * 3).reshape(2, 8, 8, 3)
    grid = image_grid(x, np.array([1, 0]), num_classes=2, per_class=1, padding=0)
    np.testing.assert_array_equal(grid, np.round(np.concatenate([x[1], x[0]]) * 255).astype(np.uint8))


def test_saved_png_reads_back(tmp_path, digits):
    x, y = digits
    path = save_image_grid(tmp_path / "sub" / "grid.png", x, y, scale=3, labels=False)
    back = np.asarray(Image.open(path))
    expected = np.repeat(np.repeat(image_grid(x, y)[..., 0], 3, axis=0), 3, axis=1)
    np.testing.assert_array_equal(back, expected)
    labelled = np.asarray(Image.open(save_image_grid(tmp_path / "labelled.png", x, y, scale=3)))
    assert labelled.shape[0] == expected.shape[0] and labelled.shape[1] > expected.shape[1]
    np.testing.assert_array_equal(labelled[:, -expected.shape[1]:], expected)
    assert (labelled[:, : labelled.shape[1] - expected.shape[1]] < 128).any()  # the drawn row labels


@pytest.mark.parametrize(
    "x, y, kwargs, match",
    [
        (np.zeros((2, 8, 8)), np.zeros(2, int), {}, "`x`"),
        (np.zeros((2, 8, 8, 2)), np.zeros(2, int), {}, "`x`"),
        (np.zeros((2, 8, 8, 1)), np.array([0, 10]), {}, "`y`, expected labels in"),
        (np.zeros((2, 8, 8, 1)), np.zeros(3, int), {}, "`y`"),
        (np.full((2, 8, 8, 1), 2.0), np.zeros(2, int), {}, r"`x`, expected float pixels in \[0, 1\]"),
        (np.zeros((2, 8, 8, 1)), np.zeros(2, int), dict(per_class=0), "`per_class`"),
    ],
)
def test_image_grid_rejects_bad_input(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        image_grid(x, y, **kwargs)


def test_training_plot_of_a_history_file(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("generator_steps,epsilon,d_loss,g_loss,votes_kept\n10,0.2,0.5,0.001,460\n20,0.3,,0.001,455\n")
    history = read_history(path)
    np.testing.assert_array_equal(history["generator_steps"], [10, 20])
    assert history["votes_kept"][1] == 455 and np.isnan(history["d_loss"][1])
    utility = [dict(epoch=1, test_accuracy=0.4, holdout_accuracy=0.5), dict(epoch=2, test_accuracy=0.5, holdout_accuracy=0.6)]
    save_training_plot(tmp_path / "a.png", history, epsilon_budget=1.0, noise_only_votes=451.0, utility_history=utility)
    save_training_plot(tmp_path / "b.png", {"generator_steps": [], "epsilon": []})  # before the first row
    wide, narrow = (Image.open(tmp_path / name).size for name in ("a.png", "b.png"))
    assert wide == (5 * narrow[0], narrow[1])  # five panels (four history columns, utility) against one
    for bad, match in (({"epsilon": [0.1]}, "generator_steps"), ({"generator_steps": [1, 2], "epsilon": [0.1]}, "one length")):
        with pytest.raises(ValueError, match=match):
            save_training_plot(tmp_path / "c.png", bad)
    (tmp_path / "other.csv").write_text("epoch,loss\n1,0.5\n")
    with pytest.raises(ValueError, match="generator_steps"):
        read_history(tmp_path / "other.csv")
