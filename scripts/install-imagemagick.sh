#!/usr/bin/env bash
# Best effort: ImageMagick's MagickWand library, so the tests can check the motion-blur port
# (nin_cli/data/corruptions.py) against ImageMagick itself. Without it that one test is skipped.
set -u
if ls /usr/lib/*/libMagickWand-6.Q16.so.6 >/dev/null 2>&1; then exit 0; fi
command -v apt-get >/dev/null 2>&1 || exit 0
if [ "$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else exit 0; fi
$sudo apt-get install -y -q libmagickwand-6.q16-6 >/dev/null 2>&1 \
  || { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q libmagickwand-6.q16-6 >/dev/null 2>&1; } \
  || echo "ImageMagick not installed: the motion-blur reference test will be skipped"
exit 0
