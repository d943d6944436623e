"""The three kinds of error sgnn raises (after TACO's user / not-supported / internal split).

Messages say where, what was expected, what was found and what to do, e.g.
``from_csr: expected crd sorted within row 17 (got 40 before 39); pass sort=True``.
"""


class SgnnError(Exception):
    """Base class of every error sgnn raises on purpose."""


class UserError(SgnnError, ValueError):
    """The caller passed something invalid (bad indices, shapes, dtypes, spec)."""


class NotSupported(SgnnError, NotImplementedError):
    """Valid input that this version of sgnn cannot compile; the message says why."""


class InternalError(SgnnError, RuntimeError):
    """A bug in sgnn: an invariant between compiler stages was broken."""


class CompilerError(SgnnError, RuntimeError):
    """The system C++ compiler is missing or rejected generated code."""


class OutOfMemory(SgnnError, MemoryError):
    """An allocation would not fit in the memory this process may still use (checked before it is
    made, so nothing is half-written and the process is not killed)."""
