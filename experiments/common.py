"""Shared helpers for the benchmarks in experiments/: threads, timing, memory bandwidth, graphs, tables.

Used by bench_spmm.py (and meant for bench_layers.py). Nothing here imports sgnn, so a benchmark can
time ``import sgnn`` itself. Graphs are ``BenchGraph``s: an ``edge_index`` ([2, nnz], row 0 = source,
row 1 = target, sorted by target then source, self loops included when asked) and GCN weights.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

# torch's beta-state warnings for CSR tensors, and PyG's deprecation noise: not the benchmark's business.
for _msg in ("Sparse CSR tensor support is in beta state", "Sparse invariant checks are implicitly disabled",
             "torch.jit.script", "An issue occurred while importing"):
    warnings.filterwarnings("ignore", message=f".*{_msg}.*")


# --- threads ----------------------------------------------------------------------------------

def set_threads(n: int) -> None:
    """One thread count for everything: OMP_NUM_THREADS (read by DGL's and sgnn's OpenMP runtimes when
    they start, so call this before importing them), torch, and DGL if it is already imported."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ.setdefault("MKL_NUM_THREADS", str(n))
    torch.set_num_threads(n)
    if "dgl" in sys.modules:
        sys.modules["dgl"].utils.set_num_threads(n)


# --- other processes -------------------------------------------------------------------------

class CpuMonitor:
    """CPU time that *other* processes used while this one ran, from /proc/stat minus our own
    (and our children's) CPU time: benchmarks on a shared 2-core machine need to know."""

    def __init__(self):
        self.start()

    @staticmethod
    def _busy_s() -> float:
        try:
            f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return float("nan")
        idle = f[3] + (f[4] if len(f) > 4 else 0)          # idle + iowait
        return (sum(f[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> None:
        self.t0, self.busy0, self.own0 = time.perf_counter(), self._busy_s(), self._own_s()

    def others(self) -> float:
        """Cores' worth of CPU that other processes used since ``start()`` (0 = quiet, 1 = one core)."""
        wall = time.perf_counter() - self.t0
        other = (self._busy_s() - self.busy0) - (self._own_s() - self.own0)
        return max(0.0, other / wall) if wall > 0 else 0.0


def wait_until_quiet(max_wait_s: float = 600, threshold: float = 0.2, window_s: float = 3.0,
                     log=print) -> float:
    """Wait (up to ``max_wait_s``) until other processes use under ``threshold`` cores over a
    ``window_s`` window; returns the last measured load (the caller reports it if still high)."""
    deadline, load, said = time.perf_counter() + max_wait_s, 0.0, False
    while True:
        m = CpuMonitor()
        time.sleep(window_s)
        load = m.others()
        if load < threshold or time.perf_counter() >= deadline:
            return load
        if not said:
            log(f"other processes use {load:.2f} cores; waiting up to {max_wait_s:.0f} s for a quiet machine")
            said = True


# --- timing -----------------------------------------------------------------------------------

@dataclass
class Timing:
    """Per-call wall times in seconds (``times``), with the statistics tables print."""

    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def quantile(self, q: float) -> float:
        s = sorted(self.times)
        return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]

    def summary(self) -> dict:
        return {"median_s": self.median, "p10_s": self.quantile(0.1), "p90_s": self.quantile(0.9),
                "min_s": min(self.times), "reps": len(self.times)}


def time_calls(fn, reps: int, warmup: int = 3) -> Timing:
    """Call ``fn()`` ``warmup`` times untimed, then ``reps`` times, timing each call on its own."""
    for _ in range(warmup):
        fn()
    clock, times = time.perf_counter, []
    for _ in range(reps):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return Timing(times)


def copy_bandwidth(mib: int = 256, reps: int = 15) -> dict:
    """Copy bandwidth of this machine with the current torch thread count: the median of timed
    ``dst.copy_(src)`` on ``mib`` MiB float32 tensors, counting bytes read plus bytes written."""
    n = mib * 2**20 // 4
    src, dst = torch.rand(n), torch.zeros(n)      # both written once, so every page is mapped
    t = time_calls(lambda: dst.copy_(src), reps, warmup=2)
    nbytes = 2 * n * 4
    return {"bytes_per_s": nbytes / t.median, "gb_per_s": nbytes / t.median / 1e9, "mib": mib,
            "reps": reps, "threads": torch.get_num_threads(), "best_gb_per_s": nbytes / min(t.times) / 1e9}


def spmm_floor_bytes(n: int, nnz: int, f: int) -> int:
    """Fewest bytes an SpMM Y = A X (CSR with int32 pos/crd, float32 values, X and Y n x f float32)
    must move: pos, crd + values once, X read once, Y written once."""
    return 4 * (n + 1) + 8 * nnz + 8 * n * f


# --- graphs -----------------------------------------------------------------------------------

@dataclass
class BenchGraph:
    """A graph to benchmark on: ``edge_index`` sorted by (target, source), GCN ``weight`` per edge."""

    name: str                  # short key, e.g. "cora"
    label: str                 # what tables show, says "synthetic" where it is
    n: int
    edge_index: torch.Tensor   # [2, nnz] int64; row 0 = source, row 1 = target
    weight: torch.Tensor       # [nnz] float32
    synthetic: bool
    info: dict = field(default_factory=dict)

    @property
    def nnz(self) -> int:
        return int(self.edge_index.size(1))


def power_law_edges(n: int, m: int, *, gamma: float = 2.5, seed: int = 0, undirected: bool = False,
                    shuffle: bool = True) -> torch.Tensor:
    """Exactly ``m`` distinct edges without self loops, Chung-Lu style: both endpoints drawn with
    probability proportional to w_i = i^(-1/(gamma-1)), duplicates dropped, redrawn in rounds.

    ``undirected=True`` draws m/2 unordered pairs and returns both directions (m directed edges, as
    Planetoid counts them). ``shuffle`` permutes node ids so the hubs are not all at the low ids.
    """
    pairs = m // 2 if undirected else m
    limit = n * (n - 1) // (2 if undirected else 1)
    if pairs > limit:
        raise ValueError(f"power_law_edges: expected at most {limit} edges for n={n} (got {pairs})")
    gen = torch.Generator().manual_seed(seed)
    w = torch.arange(1, n + 1, dtype=torch.float64).pow(-1.0 / (gamma - 1.0))
    keys = torch.empty(0, dtype=torch.int64)
    while keys.numel() < pairs:                    # a few rounds: only duplicates among hubs are redrawn
        k = int((pairs - keys.numel()) * 1.25) + 64
        a = torch.multinomial(w, k, replacement=True, generator=gen)
        b = torch.multinomial(w, k, replacement=True, generator=gen)
        if undirected:
            a, b = torch.minimum(a, b), torch.maximum(a, b)
        keep = a != b
        keys = torch.cat([keys, a[keep] * n + b[keep]]).unique()
    keys = keys[torch.randperm(keys.numel(), generator=gen)[:pairs]]
    perm = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    ei = perm[torch.stack([keys // n, keys % n])]
    return torch.cat([ei, ei.flip(0)], 1) if undirected else ei


def coalesce(ei: torch.Tensor, n: int) -> torch.Tensor:
    """Distinct edges sorted by (target, source)."""
    keys = (ei[1] * n + ei[0]).unique()             # unique() sorts
    return torch.stack([keys % n, keys // n])


def symmetrise(ei: torch.Tensor, n: int) -> torch.Tensor:
    return coalesce(torch.cat([ei, ei.flip(0)], 1), n)


def gcn_normalise(ei: torch.Tensor, n: int, self_loops: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(edge_index with self loops, weights deg^-1/2[source] * deg^-1/2[target]), as PyG's gcn_norm:
    the degree counts in-edges at each target (equal to out-degree on a symmetric graph)."""
    ei = ei[:, ei[0] != ei[1]]
    if self_loops:
        loop = torch.arange(n).expand(2, n)
        ei = torch.cat([ei, loop], 1)
    ei = coalesce(ei, n)
    deg = torch.bincount(ei[1], minlength=n).to(torch.float32)
    dinv = deg.pow(-0.5).masked_fill_(deg == 0, 0.0)
    return ei, (dinv[ei[0]] * dinv[ei[1]]).contiguous()


def synthetic_graph(name: str, n: int, m: int, *, undirected: bool, symmetrise_after: bool = False,
                    gamma: float = 2.5, seed: int = 0, self_loops: bool = True) -> BenchGraph:
    """A power-law graph with GCN weights; the label says it is synthetic and how it was made."""
    t0 = time.perf_counter()
    ei = power_law_edges(n, m, gamma=gamma, seed=seed, undirected=undirected)
    ei = symmetrise(ei, n) if symmetrise_after else coalesce(ei, n)
    m_sym = int(ei.size(1))
    ei, w = gcn_normalise(ei, n, self_loops)
    how = "symmetrised, " if symmetrise_after else ""
    label = f"{name} (synthetic power law γ={gamma}, {how}{'self loops' if self_loops else 'no self loops'})"
    deg = torch.bincount(ei[1], minlength=n)
    return BenchGraph(name, label, n, ei, w, True,
                      {"drawn_edges": m, "edges_no_loops": m_sym, "gamma": gamma, "seed": seed,
                       "max_degree": int(deg.max()), "build_s": time.perf_counter() - t0})


def data_root() -> Path:
    """``$SGNN_DATA``, else ``<repo>/../shared/datasets``, else ``~/.cache/sgnn/data`` (as the harness)."""
    env = os.environ.get("SGNN_DATA")
    if env:
        return Path(env).expanduser()
    shared = REPO.parent / "shared" / "datasets"
    return shared if shared.is_dir() else Path("~/.cache/sgnn/data").expanduser()


def planetoid_edge_index(name: str, root: Path | None = None,
                         cache: Path = Path("~/.cache/sgnn/bench")) -> torch.Tensor | None:
    """The edge_index of Planetoid ``name`` read by PyG from ``<root>/planetoid/<Name>/raw`` through a
    writable mirror (symlinks) in ``cache``, where PyG writes processed/; None if it cannot be read."""
    raw = (root or data_root()) / "planetoid" / name / "raw"
    files = sorted(raw.glob(f"ind.{name.lower()}.*")) if raw.is_dir() else []
    if len(files) < 8:
        return None
    mirror = Path(cache).expanduser() / "planetoid"
    (mirror / name / "raw").mkdir(parents=True, exist_ok=True)
    for f in files:
        link = mirror / name / "raw" / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    try:
        import contextlib
        import io
        from torch_geometric.datasets import Planetoid
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return Planetoid(str(mirror), name)[0].edge_index
    except Exception as e:                          # offline download attempt, a broken file, ...
        print(f"planetoid_edge_index: reading {name} from {raw} failed ({type(e).__name__}: {e})",
              file=sys.stderr)
        return None


def real_or_synthetic(name: str, planetoid_name: str, n: int, m: int, seed: int = 0) -> BenchGraph:
    """The real Planetoid graph if its files can be read, else a same-sized synthetic stand-in."""
    ei = planetoid_edge_index(planetoid_name)
    if ei is None:
        g = synthetic_graph(name, n, m, undirected=True, seed=seed)
        g.label = g.label.replace("(synthetic", f"(stand-in, {planetoid_name} unreadable: synthetic", 1)
        return g
    nn = int(ei.max()) + 1
    ei = symmetrise(ei, nn)
    m_real = int(ei.size(1))
    ei, w = gcn_normalise(ei, nn)
    deg = torch.bincount(ei[1], minlength=nn)
    return BenchGraph(name, f"{name} (real {planetoid_name}, self loops)", nn, ei, w, False,
                      {"edges_no_loops": m_real, "max_degree": int(deg.max())})


# The standard sizes: Planetoid counts directed edges of the symmetric graph; OGB's arXiv count is
# before symmetrisation (as OGB reports it), so the arXiv-sized graph ends with about twice as many.
GRAPHS = {
    "cora": lambda: real_or_synthetic("cora", "Cora", 2708, 10556),
    "cora-syn": lambda: synthetic_graph("cora", 2708, 10556, undirected=True, seed=1),
    "pubmed": lambda: synthetic_graph("pubmed", 19717, 88648, undirected=True, seed=2),
    "arxiv": lambda: synthetic_graph("arxiv", 169343, 1166243, undirected=False, symmetrise_after=True,
                                     seed=3),
}


def make_graph(name: str) -> BenchGraph:
    if name not in GRAPHS:
        raise ValueError(f"make_graph: expected one of {sorted(GRAPHS)} (got {name!r})")
    return GRAPHS[name]()


# --- reporting --------------------------------------------------------------------------------

def machine_info() -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor(),
            "cores": os.cpu_count(), "threads": torch.get_num_threads()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def print_table(title: str, columns: list[str], rows: list[list], right=frozenset(), section_by: int = 0,
                width: int = 200) -> None:
    """A rich table if rich is installed, else aligned plain text. Cells are printed with str(); a
    rule separates rows whose column ``section_by`` changes; columns named in ``right`` align right."""
    cells = [[("" if c is None else str(c)) for c in r] for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(columns)]
        fmt = lambda r: "  ".join(c.rjust(w) if h in right else c.ljust(w)     # noqa: E731
                                  for c, w, h in zip(r, widths, columns))
        print(title)
        print(fmt(columns))
        print("  ".join("-" * w for w in widths))
        for r in cells:
            print(fmt(r))
        return
    t = Table(title=title, title_justify="left")
    for h in columns:
        t.add_column(h, justify="right" if h in right else "left", no_wrap=True)
    prev = None
    for r in cells:
        if prev is not None and r[section_by] != prev:
            t.add_section()
        prev = r[section_by]
        t.add_row(*r)
    Console(width=width).print(t)


def write_json(obj, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n")


# --- memory -----------------------------------------------------------------------------------
# Peak resident memory of this process (torch has no allocator statistics on CPU, and tracemalloc
# does not see torch's C++ allocations). Added for bench_layers.py.

def rss_bytes() -> int:
    """Current resident set size of this process (VmRSS from /proc/self/status, else psutil)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil
    return psutil.Process().memory_info().rss


def _vm_hwm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def release_memory() -> None:
    """gc, then glibc ``malloc_trim(0)``: freed heap pages go back to the OS, so the next peak
    measurement starts from what is really in use (not from memory glibc kept for reuse)."""
    import gc
    gc.collect()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRss:
    """Peak growth of this process's resident set over a ``with`` block, in bytes (``increase``).

    On entry: ``release_memory()`` (unless ``release=False``), the baseline VmRSS, then the kernel's
    high-water mark VmHWM is reset by writing 5 to /proc/self/clear_refs (Linux >= 4.0): on exit
    VmHWM - baseline is the exact peak, at no cost to the timed code (``method == "VmHWM"``). Where
    the reset is not allowed, a background thread samples VmRSS every ``interval_s`` instead
    (``method == "sampler"``; it can miss peaks shorter than the interval and costs some CPU).
    """

    def __init__(self, interval_s: float = 0.002, release: bool = True):
        self.interval_s, self.release = interval_s, release
        self.method, self.base, self.peak, self._thread = None, 0, 0, None

    def __enter__(self):
        if self.release:
            release_memory()
        self.base = rss_bytes()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM"
        except OSError:
            import threading
            self.method, self._stop = "sampler", threading.Event()
            self.peak = self.base

            def sample():
                while not self._stop.is_set():
                    self.peak = max(self.peak, rss_bytes())
                    self._stop.wait(self.interval_s)
            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, rss_bytes())
        else:
            self.peak = max(_vm_hwm_bytes() or 0, rss_bytes())
        return False

    @property
    def increase(self) -> int:
        return max(0, self.peak - self.base)
