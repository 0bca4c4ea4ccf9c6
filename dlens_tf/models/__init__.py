"""Keras models with private training steps."""

from dlens_tf.models.base import PrivateModel
from dlens_tf.models.checkpoints import (check_room_for_checkpoint, checkpoint_bytes, restore_checkpoint,
                                         save_checkpoint)
from dlens_tf.models.datalens import DataLens
from dlens_tf.models.dp_model import DPModel, make_private
from dlens_tf.models.generator import Generator
from dlens_tf.models.teachers import TeacherEnsemble, build_discriminator

__all__ = ["DPModel", "DataLens", "Generator", "PrivateModel", "TeacherEnsemble", "build_discriminator",
           "check_room_for_checkpoint", "checkpoint_bytes", "make_private", "restore_checkpoint", "save_checkpoint"]
