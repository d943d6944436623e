"""One framework's run of ``bench=scale``, in its own process (started by bench_scale.py):

    python -m sgnn.harness.scale_worker SPEC.yaml RESULT.json

After the imports the soft RLIMIT_AS becomes ``memory_limit_bytes`` (so input construction and the run
count, the interpreter and libraries do not); then the graph is loaded through the harness
(``data.load``), the PyG model built from the seed, and the RSS recorded as the base (VmHWM reset).
The framework's twin is built and called ``warmup`` times, then ``repetitions`` timed calls, all
under torch.inference_mode(). The result JSON says ``status``: ok, oom (MemoryError, sgnn's
OutOfMemory, a failed allocation or mapping) or error; it is written even after an OOM.
"""
from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from pathlib import Path

OOM_TEXT = ("can't allocate memory", "cannot allocate memory", "bad_alloc", "out of memory",
            "failed to map segment", "thread creation failed", "outofmemory", "memoryerror")


def is_oom(e: BaseException | str) -> bool:
    """Whether an exception (or a crash's stderr) says an allocation failed."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemory":
        return True
    text = e if isinstance(e, str) else f"{type(e).__name__}: {e}"
    return any(t in text.lower() for t in OOM_TEXT)


def set_limit(nbytes: int | None) -> None:
    """Soft RLIMIT_AS = ``nbytes`` (None: unlimited up to the hard limit, which stays as it was)."""
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if nbytes is None:
        new = hard
    else:
        new = int(nbytes) if hard == resource.RLIM_INFINITY else min(int(nbytes), hard)
    resource.setrlimit(resource.RLIMIT_AS, (new, hard))


def _imports(fw: str, threads: int) -> None:
    """Everything the run needs, imported (and torch's thread pool started) before the limit."""
    import torch

    from .timing import set_threads
    set_threads(threads)
    torch.randn(256, 256) @ torch.randn(256, 256)
    import torch_geometric.nn  # noqa: F401
    if fw == "dgl":
        import dgl.nn  # noqa: F401
    if fw == "sgnn":
        import sgnn.layers  # noqa: F401
    from . import data, models  # noqa: F401


def prepare(cfg) -> tuple[object, object, dict]:
    """(graph, PyG reference net, info): the input every framework gets, then the base RSS."""
    import torch

    from . import data
    from .memory import release_memory, reset_hwm, rss_bytes, vm_hwm_bytes
    from .models import build_pyg
    t0 = time.perf_counter()
    graph = data.load(cfg)
    d = graph.data
    torch.manual_seed(int(cfg.seed))
    net = build_pyg(cfg.model, d.num_features, int(d.y.max()) + 1).eval()
    release_memory()
    info = {"nodes": int(d.num_nodes), "edges": graph.num_edges, "features": int(d.num_features),
            "label": graph.label, "load_s": time.perf_counter() - t0, "load_peak_rss": vm_hwm_bytes(),
            "base_rss": rss_bytes()}
    reset_hwm()
    return graph, net, info


def run_framework(fw: str, graph, net, warmup: int, repetitions: int) -> dict:
    """Build the twin, ``warmup`` calls (the first timed apart), ``repetitions`` timed calls."""
    import torch

    from .models import FRAMEWORKS
    from .timing import time_calls
    t0 = time.perf_counter()
    with torch.inference_mode():
        fn = FRAMEWORKS[fw](net, graph.data, pyg_cached=True)
        shape = list(fn().shape)  # not kept: a call's peak must not include an earlier call's result
        first = time.perf_counter() - t0
        for _ in range(max(warmup - 1, 0)):
            fn()
        t = time_calls(fn, repetitions)
    return {"first_call_s": first, "out_shape": shape, **t.asdict()}


def main(spec_path: str, result_path: str) -> int:
    from omegaconf import OmegaConf
    spec = OmegaConf.load(spec_path)
    res = {"framework": spec.framework, "status": "ok"}
    t_start = time.perf_counter()
    _imports(str(spec.framework), int(spec.cfg.threads))
    from .memory import rss_bytes, vm_hwm_bytes, vm_size_bytes
    res.update(import_s=time.perf_counter() - t_start, import_rss=rss_bytes(), import_vm=vm_size_bytes())
    set_limit(spec.memory_limit_bytes)
    try:
        graph, net, info = prepare(spec.cfg)
        res.update(info)
        res.update(run_framework(str(spec.framework), graph, net, int(spec.warmup), int(spec.repetitions)))
    except BaseException as e:                     # noqa: BLE001 - the parent records what happened
        set_limit(None)
        res.update(status="oom" if is_oom(e) else "error", error=f"{type(e).__name__}: {e}"[:2000],
                   traceback=traceback.format_exc()[-4000:], data_missing=type(e).__name__ == "DataMissing")
    set_limit(None)
    res["run_peak_rss"] = max(vm_hwm_bytes() or 0, rss_bytes())   # since the base (or the start, if earlier)
    Path(result_path).write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
