"""Per-level storage formats, after TACO: a format is one level kind per dimension plus a mode order.

A *dimension* is an axis of the mathematical tensor; a *level* is an axis of the storage.
Level kinds and their one-letter codes:

- ``d`` dense:       every coordinate 0..N-1 is stored; position = parent * N + coordinate (has locate)
- ``s`` compressed:  ``pos[parent] .. pos[parent+1]`` positions, coordinates in ``crd``
- ``u`` compressed, non-unique (the first level of COO)
- ``q`` singleton:   one coordinate per parent position (the second level of COO)

CSR is ``Format("ds")``, CSC is ``Format("ds", order=(1, 0))``, COO ``Format("uq")``, DCSR ``Format("ss")``.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError


@dataclass(frozen=True, slots=True, kw_only=True)
class Level:
    """One storage level: its kind and the properties its coordinates promise."""

    kind: str  # "dense" | "compressed" | "singleton"
    ordered: bool = True
    unique: bool = True

    @property
    def has_locate(self) -> bool:
        """Random access to a coordinate in O(1) (only dense levels)."""
        return self.kind == "dense"

    @property
    def iterates_by_position(self) -> bool:
        """Its coordinates are enumerated through positions (``crd``), not by counting."""
        return self.kind != "dense"

    @property
    def iterates_positions(self) -> bool:
        """The positions under a parent are the range ``pos[parent] .. pos[parent + 1]``."""
        return self.kind == "compressed"

    def has_array(self, role: str) -> bool:
        """Whether the level stores a ``pos`` (compressed) or a ``crd`` (not dense) array."""
        return self.kind == "compressed" if role == "pos" else self.kind != "dense"

    @property
    def code(self) -> str:
        if self.kind == "dense":
            return "d"
        if self.kind == "singleton":
            return "q"
        return "s" if self.unique else "u"


_KINDS = {
    "d": Level(kind="dense"),
    "s": Level(kind="compressed"),
    "u": Level(kind="compressed", unique=False),
    "q": Level(kind="singleton"),
}


@dataclass(frozen=True, slots=True)
class Format:
    """Level kinds (in storage order) and ``order``: which dimension each level stores."""

    levels: tuple[Level, ...]
    order: tuple[int, ...]

    def __init__(self, codes: str, order: tuple[int, ...] | None = None):
        bad = [c for c in codes if c not in _KINDS]
        if bad or not codes:
            raise UserError(f"Format: expected level codes from 'dsuq' (got {codes!r})")
        order = tuple(range(len(codes))) if order is None else tuple(order)
        if sorted(order) != list(range(len(codes))):
            raise UserError(f"Format: expected order to be a permutation of 0..{len(codes) - 1} (got {order})")
        if codes[0] == "q":
            raise UserError("Format: a singleton level needs a parent level")
        object.__setattr__(self, "levels", tuple(_KINDS[c] for c in codes))
        object.__setattr__(self, "order", order)

    @property
    def codes(self) -> str:
        return "".join(lv.code for lv in self.levels)

    @property
    def name(self) -> str:
        """The conventional name where there is one (``csr``, ``csc``, ``coo``, ``dcsr``)."""
        return _NAMES.get((self.codes, self.order), f"{self.codes}:{','.join(map(str, self.order))}")

    def __repr__(self) -> str:
        if self.order == tuple(range(len(self.levels))):
            return f'Format("{self.codes}")'
        return f'Format("{self.codes}", order={self.order})'


CSR = Format("ds")
CSC = Format("ds", order=(1, 0))
COO = Format("uq")
DCSR = Format("ss")
DCSC = Format("ss", order=(1, 0))
_NAMES = {("ds", (0, 1)): "csr", ("ds", (1, 0)): "csc", ("uq", (0, 1)): "coo", ("ss", (0, 1)): "dcsr",
          ("ss", (1, 0)): "dcsc", ("uq", (1, 0)): "coo_t"}


def parse_format(fmt: "Format | str") -> Format:
    """``"csr"``, ``"csc"``, ``"coo"``, ``"dcsr"``, ``"dcsc"``, a code string like ``"ds"``, or a Format."""
    if isinstance(fmt, Format):
        return fmt
    named = {"csr": CSR, "csc": CSC, "coo": COO, "dcsr": DCSR, "dcsc": DCSC}
    if isinstance(fmt, str) and fmt.lower() in named:
        return named[fmt.lower()]
    if isinstance(fmt, str):
        return Format(fmt)
    raise UserError(f"expected a Format or a format name such as 'csr' (got {type(fmt).__name__})")
