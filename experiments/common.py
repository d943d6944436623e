"""Compatibility names for scripts in experiments/ that predate the one harness (dist_inference.py).

The benchmarks are Hydra entries of run.py now (``python run.py bench=spmm|layers|train|scale``); their
helpers live in sgnn/harness: timing.py (threads, timing), machine.py (lscpu, load of other processes,
bandwidth), memory.py (RSS, peaks), report.py (tables, JSON), data.py (loaders, generators).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout without install

from sgnn.harness.machine import machine_info
from sgnn.harness.memory import vm_hwm_bytes as _vm_hwm_bytes
from sgnn.harness.report import write_json
from sgnn.harness.timing import set_threads

__all__ = ["_vm_hwm_bytes", "machine_info", "set_threads", "write_json"]
