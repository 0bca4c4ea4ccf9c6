"""Collect results/dpsgd_*.json (written by train_dpsgd.py) into one markdown table.

  python3 apps/dpsgd_table.py --results=results --out=results/dpsgd_summary.md
"""

import glob
import json
import os

from absl import flags

import _cli  # apps/_cli.py

flags.DEFINE_string("results", "results", "Directory holding dpsgd_<dataset>_<mechanism>_eps<e>.json files.")
flags.DEFINE_string("out", "results/dpsgd_summary.md", "Markdown file to write.")
FLAGS = flags.FLAGS
MECHANISMS = ("gaussian", "topagg", "topk", "randk", "lowrank")


def main(argv):
    del argv
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(FLAGS.results, "dpsgd_*.json")))]
    if not runs:
        raise SystemExit(f"no dpsgd_*.json in {FLAGS.results}")
    cells = {(r["dataset"], float(r["epsilon"]), r["mechanism"]): r for r in runs}
    rows = sorted({(d, e) for d, e, _ in cells})
    lines = ["| dataset | eps | z | " + " | ".join(MECHANISMS) + " |", "|---|---|---|" + "---|" * len(MECHANISMS)]
    for dataset, eps in rows:
        found = [cells.get((dataset, eps, m)) for m in MECHANISMS]
        z = next(r["noise_multiplier"] for r in found if r)
        accs = [f"{r['test_accuracy']:.4f}" if r else "not run" for r in found]
        lines.append(f"| {dataset} | {eps:g} | {z:.3f} | " + " | ".join(accs) + " |")
    first = runs[0]
    header = (f"Test accuracy on the real test set. Same small CNN for all, {first['epochs']} epochs, expected batch "
              f"{first['batch_size']} ({first['sampling']} sampling), C={first['l2_norm_clip']}, delta={first['delta']}, "
              f"{first['accountant']} accountant, z calibrated to each epsilon; per-mechanism settings in each JSON.\n\n")
    with open(FLAGS.out, "w") as f:
        f.write(header + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    _cli.run(main)
