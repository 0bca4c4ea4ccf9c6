import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as dlens_tf does, before any test module loads TF

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
