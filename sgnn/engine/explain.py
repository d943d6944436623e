"""``explain()``: what the compiler decided for an expression, section by section in pipeline order."""
from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field


@dataclass
class Explanation:
    """Fields tests can assert on; ``str()`` prints them in pipeline order."""

    expression: str
    normalized: str
    formats: dict  # operand -> "csr[int32,float32]" / "dense[float32, 2-d]"
    decisions: list
    output: str
    loop_order: tuple
    parallel: str
    tile: object
    loop_ir: str
    cpp: str
    cache_key: str
    cache_hit: bool
    conversions: list = field(default_factory=list)

    @property
    def cpp_lines(self) -> int:
        return self.cpp.count("\n")

    def __str__(self) -> str:
        fmts = "\n".join(f"  {k}: {v}" for k, v in self.formats.items())
        dec = "\n".join(f"  - {d}" for d in self.decisions)
        return (f"== expression\n  {self.expression}\n  normalised: {self.normalized}\n"
                f"== formats\n{fmts}\n== schedule\n{dec}\n== loop IR\n{self.loop_ir}\n"
                f"== C++ ({self.cpp_lines} lines, cache key {self.cache_key}, "
                f"{'hit' if self.cache_hit else 'miss'})\n{self.cpp}")

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))


def explain_plan(plan, ops: dict) -> Explanation:
    s = plan.sched
    by_slot, sizes, tile, why = plan.prepare(ops)
    k = plan.kernel(tile, why)
    formats = {}
    for a, sl in s.slots.items():
        info = sl.info
        if sl.sparse:
            fmt = sl.format.name + (f" (converted from {info.format.name})" if sl.convert_to else "")
            formats[str(a)] = f"{fmt} [{info.index_dtype} indices, {info.value_dtype or 'pattern-only'}]"
        else:
            formats[str(a)] = f"dense [{info.value_dtype}, {info.ndim}-d]"
    decisions = list(s.decisions) + ([why] if why else [])
    return Explanation(
        expression=str(plan.stmt), normalized=str(s.stmt), formats=formats, decisions=decisions,
        output=s.output, loop_order=tuple(s.outer) + tuple(s.inner),
        parallel=(f"over {s.outer[0]}" if s.parallel else "serial"), tile=tile, loop_ir=k.loop_ir,
        cpp=k.source, cache_key=k.info["key"], cache_hit=bool(k.info.get("hit")),
        conversions=[str(d) for d in s.decisions if str(d).startswith("convert")])


# ---------------------------------------------------------------- a whole layer call
_recorder: contextvars.ContextVar[list | None] = contextvars.ContextVar("sgnn_explain", default=None)


def active() -> bool:
    """True while ``recording()`` (callers skip building what only an explanation reads)."""
    return _recorder.get() is not None


def record(stmt, ops: dict, memo_key=None, out_dtype=None) -> None:
    """Remember an evaluation while ``recording()`` (a layer's kernels call this; else a no-op)."""
    calls = _recorder.get()
    if calls is not None:
        calls.append(("kernel", stmt, dict(ops), (memo_key, out_dtype)))


def record_layer(stmt, plan) -> None:
    """Remember the whole statement of a layer call and its plan while recording."""
    calls = _recorder.get()
    if calls is not None:
        calls.append(("layer", stmt, plan, None))


def note(text) -> None:
    """Remember a layer-level decision (association, blocking, fused epilogue) while recording;
    ``text`` is a string or a function making it (formatted only while recording)."""
    calls = _recorder.get()
    if calls is not None:
        calls.append(("decision", text() if callable(text) else text, None, None))


@contextlib.contextmanager
def recording():
    calls: list = []
    token = _recorder.set(calls)
    try:
        yield calls
    finally:
        _recorder.reset(token)


@dataclass
class CallExplanation:
    """The plan of one layer call: its whole statements (and plan shapes), its decisions (each a
    ``schedule.Decision``: what and why) and one ``Explanation`` per kernel it ran, in order."""

    layer: str
    decisions: list
    kernels: list
    statements: list = field(default_factory=list)  # (whole layer statement, plan shape)

    def __str__(self) -> str:
        dec = "\n".join(f"  - {d}" for d in self.decisions) or "  (none)"
        stm = "\n".join(f"  {s}\n    planned as: {shape}" for s, shape in self.statements) or "  (none)"
        parts = [f"#### {self.layer}\n== layer statement\n{stm}\n== layer decisions\n{dec}"]
        for n, k in enumerate(self.kernels, 1):
            parts.append(f"#### kernel {n} of {len(self.kernels)}\n{k}")
        return "\n".join(parts)

    def _repr_pretty_(self, p, cycle):  # IPython
        p.text(str(self))
