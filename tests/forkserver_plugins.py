"""Imported by the fork server of tests/forkrun.py alone (its PRELOAD): Hydra's plugin registry,
scanned once there. Hydra scans the `hydra_plugins` namespace at a process's first composition,
executing every plugin module anew: 0.25 s of each forked `nin`, which now inherits the registry.
A child whose PYTHONPATH adds directories, where plugins of its own could be, scans anew
(forkrun._child)."""

import os.path
import sys

from hydra.core.plugins import Plugins

Plugins.instance()
sys.path.remove(os.path.dirname(os.path.abspath(__file__)))  # put there for this import alone (forkrun._ctx)
