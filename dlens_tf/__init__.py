"""dlens_tf: differentially private learning through gradient compression and aggregation."""

import os

# TF's oneDNN CPU kernels, on by default only on CPUs with AVX-512 VNNI/BF16 or AMX, are the only ones
# that differentiate the grouped convolutions of `TeacherEnsemble` (about 2x faster than its im2col
# fallback on AVX2). TF reads this when it loads, so it takes effect only if dlens_tf is imported before
# TensorFlow; a value you set yourself is kept. See `dlens_tf.models.teachers.grouped_convolution_supported`.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from dlens_tf.callbacks import PrivacyBudget
from dlens_tf.privacy import PrivacyAccountant, TopAgg, TopAggQuery

__version__ = "0.1.0"
__all__ = ["PrivacyAccountant", "PrivacyBudget", "TopAgg", "TopAggQuery"]
