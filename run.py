"""sgnn's reproduction harness (Hydra app): ``python run.py dataset=cora model=gcn``.

Whole comparison: ``python run.py -m dataset=cora,citeseer,pubmed,arxiv model=gcn,sage,gat
data.allow_stand_in=true``, then ``python experiments/gather.py multirun/<date>/<time>``.
Other entries of the same config tree (configs/bench/): ``bench=spmm`` (SpMM vs torch.sparse / DGL /
scipy, gather roofline), ``bench=layers`` (layers and 2-layer models, peak memory), ``bench=train``
(training epochs), ``bench=scale`` (large-graph inference, one subprocess per framework),
``bench=accuracy`` (accuracy after training through sgnn vs PyG). The second app of the same tree:
``experiments/dist_inference.py`` (partitioned inference under torchrun, configs/dist_inference.yaml).
Settings: configs/config.yaml; the steps: sgnn/harness/__init__.py.
"""
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


@hydra.main(config_path="configs", config_name="config", version_base=None)
def app(cfg: DictConfig) -> None:
    from sgnn.harness import DataMissing, run
    from sgnn.harness.report import write_json
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    try:
        run(cfg, out)
    except DataMissing as e:
        print(f"error: {e}", file=sys.stderr)
        if hc.mode != RunMode.MULTIRUN:
            sys.exit(2)
        # A multirun goes on with the other jobs; gather.py lists this one as missing.
        error = {"bench": cfg.bench.name, "dataset": cfg.dataset.name, "model": cfg.model.name,
                 "error": str(e)}
        write_json(error, out / "error.json")


if __name__ == "__main__":
    app()
