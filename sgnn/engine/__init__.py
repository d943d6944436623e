"""The sparse compiler, one stage per module, in pipeline order:

1. ``expr``      parse / build index notation            → ``Statement``
2. ``rewrite``   hoist invariant factors                  → ``Statement``
3. ``schedule``  formats, loop order, output (``domains``) → ``Schedule``
4. ``tiling``    the tile for one call's sizes            → ``Tile``
5. ``lower``     loop IR (``loopir``; ``lower_reduce``, ``lower_scalar``) → ``Function``s
6. ``verify``    reject malformed loop IR                 → (checked ``Function``s)
7. ``codegen``   render C++17 + OpenMP (the prototype from ``abi``) → source ``str``
8. ``compiler``  system compiler + disk cache             → shared object
9. ``runtime``   ctypes call on tensor memory (argument order from ``abi``) → ``Kernel`` / ``Plan``

Storage: ``formats`` (levels), ``tensor`` (``SparseTensor``), ``validate``, ``convert``,
``convert_formats``, ``scipy_io``. Safety: ``native`` (the only path from a tensor to a pointer
native code sees), ``caches`` (bounded, thread-safe memo tables), ``diskcache`` (the kernel cache
directory, its fallback and stale-file sweep).
"""
from .api import einsum, evaluate, explain
from .formats import COO, CSC, CSR, DCSR, Format, Level
from .tensor import SparseTensor

__all__ = ["einsum", "evaluate", "explain", "Format", "Level", "CSR", "CSC", "COO", "DCSR", "SparseTensor"]
