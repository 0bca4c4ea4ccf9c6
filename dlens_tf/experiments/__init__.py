"""Reproducible experiment runners shared by the apps, tutorials and benchmarks (DP-SGD runs, the compression study)."""
