"""sgnn as a package: a built wheel compiles and runs a kernel outside the checkout; the core imports no
harness dependency; a missing optional dependency names the extra that installs it."""
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
import torch

from sgnn.distributed import partition
from sgnn.errors import UserError

REPO = Path(__file__).resolve().parents[1]
HARNESS_ONLY = ("torch_geometric", "dgl", "hydra", "omegaconf", "ogb", "matplotlib", "rich", "pymetis")

# Run inside the fresh venv, from another working directory: an SpMM through the compiler and the
# hand-written conversions (csrc/convert.cpp builds the CSR), checked against torch.
SPMM = """
import json, sys, torch, sgnn
ei = torch.tensor([[0, 1, 1, 2, 3, 3], [1, 0, 2, 3, 0, 2]])
A = sgnn.SparseTensor.from_edge_index(ei, num_nodes=4)
X = torch.randn(4, 5)
dense = torch.zeros(4, 4)
dense[ei[1], ei[0]] = 1.0
ok = torch.allclose(sgnn.einsum("ik,kj->ij", A, X), dense @ X, atol=1e-6)
print(json.dumps({"file": sgnn.__file__, "ok": ok, "modules": sorted(m for m in sys.modules if "sgnn" in m)}))
"""


def _wheel_tools() -> str | None:
    """Why ``pip wheel --no-build-isolation`` cannot run here, or None when it can."""
    if subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode:
        return f"pip is not installed in {sys.prefix}: `pip wheel` is unavailable"
    try:
        import setuptools  # noqa: F401  (the build backend, used in place: --no-build-isolation)
    except ImportError:
        return "setuptools (the build backend) is not installed: `pip wheel --no-build-isolation` cannot run"
    return None


def _source_copy(dest: Path) -> Path:
    """The files a wheel is built from, copied (links kept), so the build never writes into the checkout."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so")
    for name in ("sgnn", "csrc"):
        shutil.copytree(REPO / name, dest / name, symlinks=True, ignore=ignore)
    return dest


def _venv(root: Path) -> Path:
    """A venv without pip whose sys.path ends with this environment's site-packages as plain
    directories: their dependencies import, their .pth files (the editable sgnn's finder) never run."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    parents = [p for p in [*site.getsitepackages(), sysconfig.get_path("purelib")] if Path(p).is_dir()]
    (Path(purelib) / "zz_parent_env.pth").write_text("\n".join(dict.fromkeys(parents)) + "\n")
    return python


@pytest.mark.timeout(170)
def test_wheel_installs_and_compiles_outside_the_checkout(tmp_path):
    why = _wheel_tools()
    if why:
        pytest.skip(why)
    t0 = time.perf_counter()
    (tmp_path / "src").mkdir()
    src = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist)], check=True, capture_output=True, text=True, timeout=120)
    (wheel,) = dist.glob("sgnn-*.whl")
    with zipfile.ZipFile(wheel) as z:                                      # every csrc/ file ships
        assert {f"sgnn/csrc/{p.name}" for p in (REPO / "csrc").iterdir()} <= set(z.namelist())
    python = _venv(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, capture_output=True, text=True, timeout=120)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SGNN_CACHE_DIR", "SGNN_CACHE")}
    env["SGNN_CACHE_DIR"] = str(tmp_path / "kernel-cache")
    out = subprocess.run([str(python), "-c", SPMM], cwd=work, env=env, capture_output=True, text=True,
                         timeout=150)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(res["file"]).is_relative_to(tmp_path / "venv"), res["file"]   # the wheel's sgnn, not REPO's
    assert res["ok"]
    assert any((tmp_path / "kernel-cache").rglob("*.so"))                    # compiled here, not reused
    assert time.perf_counter() - t0 < 90


def test_core_imports_no_harness_dependency():
    code = (f"import sys, sgnn, sgnn.layers, sgnn.distributed\n"
            f"print([m for m in sys.modules if m.split('.')[0] in {HARNESS_ONLY!r}])")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_metis_without_pymetis_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymetis", None)      # import pymetis -> ImportError
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 0]])
    with pytest.raises(UserError, match=r"sgnn\[distributed\]"):
        partition(ei, 4, 2, method="metis")
    assert partition(ei, 4, 2, method="range").unique().numel() == 2    # range needs nothing
