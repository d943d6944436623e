"""Partitioned full-graph inference, checked against one process (Hydra app; sgnn/harness/dist_inference.py):

    torchrun --nproc-per-node=P experiments/dist_inference.py dataset=products model=sage parts=P \\
        data.allow_stand_in=true

Settings: configs/dist_inference.yaml, with the harness's data, dataset and model groups.
"""
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sgnn.harness import dist_inference


@hydra.main(config_path="../configs", config_name="dist_inference", version_base=None)
def app(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    dist_inference.main(cfg, Path(__file__).resolve(), list(hc.overrides.task), Path(hc.runtime.output_dir))


if __name__ == "__main__":
    app()
