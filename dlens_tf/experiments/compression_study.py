"""The DP x compression study (Lin, 2022): compression rate x noise multiplier -> test accuracy.

Our reading of the study's recommendation (only its abstract is available): under DP noise,
compress the NOISY average gradient (noise_placement="after", post-processing, so the privacy
cost is unchanged), which drops most of the noise energy along with the small coordinates, and
keep what the compressor dropped as error feedback for the next step, which undoes the bias
that sparsification adds. The abstract's two figures map onto these two halves: "reduces the
harm of DP noise" (sparsifying the noisy update) and "reduces the harm of sparsification"
(feeding the residual back). It is the `error_feedback=True` option of the compressed
mechanisms; the study runs it as the "recommended" rows.
"""

import csv
import dataclasses



def study_grid(compressors=("topk", "randk", "lowrank"), rates=(0.1, 0.01), ranks=(1, 4),
               noise_multipliers=(0.0, 1.0, 2.0), recommended=("topk",)):
    """(label, mechanism, mechanism_config, noise_multiplier) for every cell, the uncompressed baseline first."""
    cells = []
    for z in noise_multipliers:
        cells.append(("none", "gaussian", {}, z))
        for name in compressors:
            settings = [{"rank": r} for r in ranks] if name == "lowrank" else [{"rate": r} for r in rates]
            for setting in settings:
                cells.append((name, name, dict(setting, noise_placement="after"), z))
                if name in recommended:
                    cells.append((f"{name}+ef", name, dict(setting, noise_placement="after", error_feedback=True), z))
    return cells


def run_study(base, cells, log=print):
    """Runs `base` (a DPSGDExperiment, noise given by each cell) on every cell; returns one row per cell."""
    rows = []
    for label, mechanism, config, z in cells:
        experiment = dataclasses.replace(base, mechanism=mechanism, mechanism_config=config, noise_multiplier=z, epsilon=None)
        summary = experiment.run()
        level = config.get("rate", config.get("rank", 1.0))
        rows.append({"compressor": label, "level": level, "noise_multiplier": z,
                     "test_accuracy": summary["test_accuracy"], "epsilon": summary["epsilon_spent"]})
        log(f"{label:10s} level={level:<6} z={z:<4} accuracy={summary['test_accuracy']:.4f}")
    return rows


def noise_harm(rows):
    """accuracy(z = 0) - accuracy(z) for every (compressor, level) and z > 0: how much the noise costs."""
    clean = {(r["compressor"], r["level"]): r["test_accuracy"] for r in rows if r["noise_multiplier"] == 0}
    return [dict(r, noise_harm=clean[(r["compressor"], r["level"])] - r["test_accuracy"])
            for r in rows if r["noise_multiplier"] > 0 and (r["compressor"], r["level"]) in clean]


def write_table(rows, markdown_path, csv_path):
    """One row per (compressor, level), one accuracy column per noise multiplier, plus the noise harm."""
    zs = sorted({r["noise_multiplier"] for r in rows})
    keys = list(dict.fromkeys((r["compressor"], r["level"]) for r in rows))
    acc = {(r["compressor"], r["level"], r["noise_multiplier"]): r["test_accuracy"] for r in rows}
    harm = {(r["compressor"], r["level"], r["noise_multiplier"]): r["noise_harm"] for r in noise_harm(rows)}
    header = ["compressor", "level"] + [f"acc z={z:g}" for z in zs] + [f"noise harm z={z:g}" for z in zs if z > 0]
    table = []
    for c, level in keys:
        table.append([c, f"{level:g}"] + [f"{acc[(c, level, z)]:.4f}" if (c, level, z) in acc else "" for z in zs]
                     + [f"{harm[(c, level, z)]:+.4f}" if (c, level, z) in harm else "" for z in zs if z > 0])
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([header] + table)
    with open(markdown_path, "w") as f:
        f.write("| " + " | ".join(header) + " |\n|" + "---|" * len(header) + "\n")
        f.writelines("| " + " | ".join(row) + " |\n" for row in table)


def plot(rows, png_path, title):
    """Test accuracy against noise multiplier, one line per (compressor, level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c, level in dict.fromkeys((r["compressor"], r["level"]) for r in rows):
        pts = sorted((r["noise_multiplier"], r["test_accuracy"]) for r in rows if (r["compressor"], r["level"]) == (c, level))
        ax.plot(*zip(*pts), marker="o", linestyle="-" if c == "none" else "--", label=f"{c} {level:g}" if c != "none" else "none")
    ax.set_xlabel("noise multiplier z")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
