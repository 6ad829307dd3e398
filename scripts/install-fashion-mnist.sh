#!/usr/bin/env bash
# Put Fashion-MNIST where `nin` finds it: Debian's package where apt works (as root or with
# passwordless sudo), torchvision's download into ~/.cache/nin otherwise.
set -u
dir=/usr/share/datasets/fashion-mnist
if [ -f "$dir/train-images-idx3-ubyte.gz" ] || [ -f "${NIN_DATA_DIR:-$HOME/.cache/nin}/FashionMNIST/raw/train-images-idx3-ubyte" ]; then
  echo "Fashion-MNIST: present"; exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=none; fi
  if [ "$sudo" != none ]; then
    $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }
    if [ -f "$dir/train-images-idx3-ubyte.gz" ]; then echo "Fashion-MNIST: installed by apt in $dir"; exit 0; fi
  fi
fi
echo "Fashion-MNIST: apt unavailable, downloading with torchvision"
exec "${1:-.venv/bin/nin}" download fashion_mnist
