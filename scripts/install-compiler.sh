#!/usr/bin/env bash
# Best effort: a C compiler for the CNN's fused first block (nin_cli/nets/conv_block.c). CI expects one
# (NIN_EXPECT_COMPILER=1 in .ci/run): without it the kernel's tests fail instead of skipping.
set -u
if command -v "${CC:-cc}" >/dev/null 2>&1; then exit 0; fi
command -v apt-get >/dev/null 2>&1 || exit 0
if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else exit 0; fi
$sudo apt-get install -y -q gcc >/dev/null 2>&1 \
  || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q gcc >/dev/null 2>&1; } \
  || echo "no C compiler installed: the fused CNN block's tests will fail (NIN_EXPECT_COMPILER=1)"
exit 0
