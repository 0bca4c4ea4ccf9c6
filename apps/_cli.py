"""Shared entry point of the apps: absl.app.run, with --help/--helpshort/--helpfull exiting 0 (absl uses 1)."""

import sys

from absl import app

_HELP = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort", "--helpfull", "-helpfull", "--helpxml")


def _parse(argv):
    try:
        return app.parse_flags_with_usage(argv)
    except SystemExit as e:
        if e.code == 1 and any(arg.split("=")[0] in _HELP for arg in argv[1:]):
            sys.exit(0)
        raise


def run(main):
    app.run(main, flags_parser=_parse)


def define_preset_flags():
    """One flag per `DataLensPreset` field (except `note`), default None = the preset's value."""
    import dataclasses

    from absl import flags

    from dlens_tf import data
    from dlens_tf.models.datalens import REAL_SAMPLING, VOTE_OUTPUTS
    from dlens_tf.models.teachers import IMAGE_GRADIENT_DTYPES
    from dlens_tf.presets import DataLensPreset

    enums = {"accountant": ["rdp", "pld"], "eval_optimizer": ["adam", "sgd"], "dataset": list(data.NAMES),
             "real_sampling": list(REAL_SAMPLING), "teacher_gradient_dtype": list(IMAGE_GRADIENT_DTYPES),
             "vote_output": list(VOTE_OUTPUTS)}
    for field in dataclasses.fields(DataLensPreset):
        if field.name == "note":
            continue
        doc = f"Override the preset's `{field.name}`."
        if field.name in enums:
            flags.DEFINE_enum(field.name, None, enums[field.name], doc)
        elif field.type in (bool, "bool"):
            flags.DEFINE_bool(field.name, None, doc)
        elif field.type in (int, "int"):
            flags.DEFINE_integer(field.name, None, doc)
        elif field.type in (float, "float"):
            flags.DEFINE_float(field.name, None, doc)
        else:  # float | None
            flags.DEFINE_string(field.name, None, doc + " A number, or 'none'.")


def define_filter_flags():
    """--filter_keep_fraction and --filter_epochs, the own-label filter of `filter_synthetic`."""
    from absl import flags

    flags.DEFINE_float("filter_keep_fraction", 1.0, "Keep this share of each class's records, those a classifier "
                       "trained on all of them finds most like their label (dlens_tf.evaluation.filter_by_own_label; "
                       "post-processing, no privacy cost); 1 keeps every record (the presets' default, the paper's "
                       "evaluation). 0.7 raised every eps = 1 run's utility we measured and lowered an eps = 10 run's "
                       "(docs/datalens_results.md).")
    flags.DEFINE_integer("filter_epochs", 2, "Epochs of the filter's scoring classifier.", lower_bound=1)
    flags.register_validator("filter_keep_fraction", lambda v: 0 < v <= 1, "--filter_keep_fraction must be in (0, 1].")


def filter_synthetic(x, y, num_classes, keep_fraction, epochs, seed):
    """(x, y) reduced by `dlens_tf.evaluation.filter_by_own_label` (unchanged with keep_fraction=1)."""
    from dlens_tf.evaluation import filter_by_own_label

    kept = filter_by_own_label(x, y, keep_fraction, num_classes, epochs=epochs, seed=seed)
    if keep_fraction < 1:
        print(f"own-label filter: kept {len(kept)} of {len(x)} records", flush=True)
    return x[kept], y[kept]


def preset_overrides():
    """{field: value} of the preset flags given on the command line."""
    import dataclasses

    from absl import flags

    from dlens_tf.presets import DataLensPreset

    out = {}
    for field in dataclasses.fields(DataLensPreset):
        if field.name != "note" and flags.FLAGS[field.name].value is not None:
            value = flags.FLAGS[field.name].value
            if field.type in (float | None, "float | None"):
                try:
                    value = None if value.lower() == "none" else float(value)
                except ValueError:
                    raise app.UsageError(f"--{field.name}: expected a number or 'none'. Received: {value!r}") from None
            out[field.name] = value
    return out
