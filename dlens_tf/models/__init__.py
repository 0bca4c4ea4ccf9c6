"""Keras models with private training steps."""

from dlens_tf.models.base import PrivateModel
from dlens_tf.models.datalens import DataLens
from dlens_tf.models.generator import Generator
from dlens_tf.models.teachers import TeacherEnsemble, build_discriminator

__all__ = ["DataLens", "Generator", "PrivateModel", "TeacherEnsemble", "build_discriminator"]

from dlens_tf.models.dp_model import DPModel, make_private  # noqa: E402

__all__ += ["DPModel", "make_private"]
