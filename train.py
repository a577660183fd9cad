"""Train the reference MNIST network: python train.py conv=<name> probe=<probe> data=<data> seed=N.

Configs live in configs/ (entry: configs/train.yaml); the task is `convlab.training.task.run`.
Sweep with -m, e.g. python train.py -m conv=torch,unfold seed=0,1,2
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    # Imported here so that --help and config errors answer without first loading torch and Lightning.
    from convlab.training.data_files import MissingDataError
    from convlab.training.task import run

    try:
        return run(cfg)
    except MissingDataError as error:
        # The message says what is missing and how to provide it; a traceback adds nothing.
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()
