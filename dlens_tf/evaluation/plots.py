"""Plots of a DataLens run: its history against generator steps, and its utility classifier per epoch."""

import csv

import numpy as np


def read_history(csv_path):
    """The rows of a run's history.csv as {column: float array} (empty cells are NaN)."""
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    if not reader.fieldnames or "generator_steps" not in reader.fieldnames:
        raise ValueError(f"Received a file that is not a DataLens history: {csv_path} has no generator_steps column.")
    return {name: np.array([float(row[name]) if row[name] else np.nan for row in rows]) for name in reader.fieldnames}


def save_training_plot(path, history, epsilon_budget=None, noise_only_votes=None, utility_history=None):
    """Writes a PNG of a DataLens run: epsilon, votes kept per record, teacher and generator losses, utility.

    Args:
      path: PNG file to write.
      history: {column: array} with `generator_steps` and any of `epsilon`, `votes_kept`, `d_loss`,
        `g_loss` (as `read_history` returns).
      epsilon_budget: drawn as a line on the epsilon panel.
      noise_only_votes: the votes per record that noise alone keeps (`TopAgg.noise_only_keep_rate` times
        the record size), drawn on the votes panel: votes near it mean the teachers' signal is lost.
      utility_history: the utility classifier's epochs (`UtilityResult.history`); adds a panel of its
        real-test and synthetic-holdout accuracy.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "generator_steps" not in history:
        raise ValueError(f"Received an invalid value for `history`, expected a `generator_steps` column. "
                         f"Received columns: {sorted(history)}")
    steps = np.asarray(history["generator_steps"])
    lengths = {name: len(values) for name, values in history.items()}
    if set(lengths.values()) != {len(steps)}:
        raise ValueError(f"Received an invalid value for `history`, expected columns of one length. Received: {lengths}")
    panels = [("epsilon", "epsilon spent", epsilon_budget, "budget"),
              ("votes_kept", "votes kept per record", noise_only_votes, "noise alone"),
              ("d_loss", "teachers' loss (not DP)", None, None), ("g_loss", "generator loss", None, None)]
    panels = [p for p in panels if p[0] in history]
    columns = len(panels) + bool(utility_history)
    fig, axes = plt.subplots(1, columns, figsize=(3.3 * columns, 3), squeeze=False)
    axes = axes[0]
    for ax, (name, title, level, label) in zip(axes, panels):
        ax.plot(steps, history[name], marker=".")
        if level is not None:
            ax.axhline(level, color="gray", linestyle="--", label=f"{label} {level:.4g}")
            ax.legend(fontsize=7)
        ax.set(title=title, xlabel="generator steps")
        ax.grid(alpha=0.3)
    if utility_history:
        ax = axes[-1]
        epochs = [e["epoch"] for e in utility_history]
        ax.plot(epochs, [e["test_accuracy"] for e in utility_history], marker=".", label="real test")
        holdout = [e.get("holdout_accuracy") for e in utility_history]
        if all(h is not None for h in holdout):
            ax.plot(epochs, holdout, marker=".", label="synthetic holdout")
        ax.set(title="utility classifier", xlabel="epoch", ylabel="accuracy")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
