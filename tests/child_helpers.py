"""Run bad inputs in a child process: each must raise an ``SgnnError``, and the process must exit cleanly."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

_EACH_RAISES = """
from sgnn.errors import SgnnError
for f in bad:
    try:
        f()
    except SgnnError:
        continue
    raise SystemExit("no error")
print("ok")
"""


def assert_each_raises_in_child(setup: str, timeout: int = 240, **env) -> None:
    """``setup`` defines a list ``bad`` of zero-argument callables; every one must raise ``SgnnError``."""
    code = textwrap.dedent(setup) + _EACH_RAISES
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **env})
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]
