"""Every tutorial runs start to finish (at small scale: DLENS_SMALL=1), so none can rot."""

import os
import pathlib
import subprocess
import sys

import pytest

TUTORIALS = sorted((pathlib.Path(__file__).parent.parent / "tutorials").glob("*.py"))


def test_there_are_tutorials():
    assert len(TUTORIALS) >= 1


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(path, tmp_path):
    env = dict(os.environ, DLENS_SMALL="1", TF_CPP_MIN_LOG_LEVEL="2", DLENS_OUTPUT_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "epsilon" in result.stdout
