"""The sparse compiler, one stage per module, in pipeline order:

1. ``expr``      parse / build index notation            → ``Statement``
2. ``rewrite``   desugar softmax, hoist invariant factors → ``Statement``
3. ``schedule``  formats, loop order, output, tiles       → ``Schedule``
4. ``lower``     loop IR (``loopir``)                     → ``Function``s
5. ``codegen``   render C++17 + OpenMP                    → source ``str``
6. ``compiler``  system compiler + disk cache             → shared object
7. ``runtime``   ctypes call on tensor memory             → ``Kernel`` / ``Plan``

Storage: ``formats`` (levels), ``tensor`` (``SparseTensor``), ``validate``, ``convert``,
``convert_formats``, ``scipy_io``. Safety: ``native`` (the only path from a tensor to a pointer
native code sees), ``caches`` (bounded, thread-safe memo tables), ``diskcache`` (the kernel cache
directory, its fallback and stale-file sweep).
"""
from .api import einsum, evaluate, explain
from .formats import COO, CSC, CSR, DCSR, Format, Level
from .tensor import SparseTensor

__all__ = ["einsum", "evaluate", "explain", "Format", "Level", "CSR", "CSC", "COO", "DCSR", "SparseTensor"]
