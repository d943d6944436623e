"""sgnn's reproduction harness (Hydra app): ``python run.py dataset=cora model=gcn``.

Whole comparison: ``python run.py -m dataset=cora,citeseer,pubmed,arxiv model=gcn,sage,gat
data.allow_stand_in=true``, then ``python experiments/gather.py multirun/<date>/<time>``.
Settings: configs/config.yaml; the steps: sgnn/harness/__init__.py.
"""
import json
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


@hydra.main(config_path="configs", config_name="config", version_base=None)
def app(cfg: DictConfig) -> None:
    from sgnn.harness import DataMissing, run
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    try:
        run(cfg, out)
    except DataMissing as e:
        print(f"error: {e}", file=sys.stderr)
        if hc.mode != RunMode.MULTIRUN:
            sys.exit(2)
        # A multirun goes on with the other jobs; gather.py lists this one as missing.
        (out / "error.json").write_text(json.dumps({"dataset": cfg.dataset.name, "model": cfg.model.name,
                                                    "error": str(e)}, indent=2) + "\n")


if __name__ == "__main__":
    app()
