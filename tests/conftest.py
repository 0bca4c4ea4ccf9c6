import os

import pytest

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as dlens_tf does, before any test module loads TF

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Minute-long subprocess runs start first, so that the two pytest-xdist workers (scripts/test.sh) do
# not end with one of them alone on a tutorial.
_FIRST = ("test_datalens_run.py", "test_tutorials.py")


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: item.path.name not in _FIRST)  # stable: the order within each part is kept


@pytest.fixture
def tensorboard_scalars():
    """A reader of TensorBoard logs: (log_dir, tag) -> {step: value} over every event file in log_dir."""
    import tensorflow as tf

    def read(log_dir, tag):
        values = {}
        for path in sorted(log_dir.glob("events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(str(path)):
                values.update({event.step: float(tf.make_ndarray(v.tensor)) for v in event.summary.value
                               if v.tag == tag})
        return values

    return read
