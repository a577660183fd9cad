"""Train the reference MNIST network: python train.py conv=<name> probe=<probe> data=<data> seed=N.

Configs live in configs/ (entry: configs/train.yaml); the task is `convlab.train.run`.
Sweep with -m, e.g. python train.py -m conv=torch,unfold seed=0,1,2
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    # Imported here so that --help and config errors answer without first loading torch and Lightning.
    from convlab.train import run

    return run(cfg)


if __name__ == "__main__":
    main()
