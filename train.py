"""Train the reference MNIST network: python train.py conv=<name or spec> probe=<probe> data=<data> seed=N.

Configs live in configs/ (entry: configs/train.yaml); the task is `convlab.training.task.run`.
Sweep with -m, e.g. python train.py -m conv=torch,unfold seed=0,1,2
The config is checked first (convlab.training.validate), before torch and Lightning load; every error a
user can fix is one line `error: ...` and a non-zero exit status: 2 for a bad setting, 130 / 143 for a
run stopped by Ctrl-C / SIGTERM (with the command that resumes it), 1 otherwise.
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from convlab.training.errors import RunError
from convlab.training.run_dir import register_resolvers

# Before Hydra composes the config: configs/ refers to ${project_root:}, ${unique_dir:}, ${run_label:}.
register_resolvers(Path(__file__).resolve().parent)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    from convlab.training.validate import validate

    try:
        validate(cfg)
        # Imported after the check, so that a bad setting answers without first loading torch and Lightning.
        from convlab.training.task import run

        return run(cfg)
    except RunError as error:
        # The message names the key or file, why, and the fix; a traceback adds nothing.
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
