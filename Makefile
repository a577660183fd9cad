# convlab: every target sets itself up (uv, the locked environment) on a fresh machine.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen
# Training and the tests that need real MNIST use the shared read-only mirror when it sits beside the clone.
TEST_MIRROR := $(wildcard ../shared/data)
LINT_PATHS := src tests scripts $(wildcard train.py)

.PHONY: install test lint format verify bench train sweep tensorboard lockstep does-it-learn report readme docs-check clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

.venv/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --all-extras
	@touch $@

install: .venv/.synced  ## create .venv from uv.lock (bootstraps uv if missing)

lint: install  ## ruff check + format check
	$(RUN) ruff check $(LINT_PATHS)
	$(RUN) ruff format --check $(LINT_PATHS)

format: install  ## apply ruff fixes and formatting
	$(RUN) ruff check --fix $(LINT_PATHS)
	$(RUN) ruff format $(LINT_PATHS)

# Test processes in parallel, one per core (pytest-xdist; each gets one torch thread, tests/conftest.py);
# PYTEST_WORKERS=0 runs them in this process, one after another.
PYTEST_WORKERS ?= auto

test: lint  ## set up, lint, run the whole test suite (PYTEST_WORKERS=0: in one process)
	CONVLAB_DATA_MIRROR=$${CONVLAB_DATA_MIRROR:-$(TEST_MIRROR)} $(RUN) pytest -n $(PYTEST_WORKERS) --dist worksteal

verify: install  ## check conv implementations against F.conv2d (IMPL=name for one, ARGS=--markdown etc.)
	$(RUN) python -m convlab.verify $(IMPL) $(ARGS)

bench: install  ## time every conv implementation against nn.Conv2d, print the tables (ARGS=--quick etc.)
	$(RUN) python -m convlab.bench --markdown outputs/bench/bench.md $(ARGS)

train: install  ## train the reference network on MNIST (CONV=unfold or CONV=path/to/my_conv.py:MyConv2d; ARGS="seed=1" etc.)
	CONVLAB_DATA_MIRROR=$${CONVLAB_DATA_MIRROR:-$(TEST_MIRROR)} $(RUN) python train.py \
		$(if $(CONV),'conv.name=$(CONV)') $(ARGS)

sweep: install  ## multirun: every conv implementation (configs/conv) on the same small subset (ARGS to add)
	CONVLAB_DATA_MIRROR=$${CONVLAB_DATA_MIRROR:-$(TEST_MIRROR)} $(RUN) python train.py -m \
		$(if $(CONV),'conv.name=$(CONV)','conv=glob(*)') \
		data.train_subset=256 data.val_subset=100 data.test_subset=500 trainer.max_epochs=1 $(ARGS)

tensorboard: install  ## TensorBoard on every run and sweep under outputs/ (http://localhost:6006)
	$(RUN) tensorboard --logdir outputs

lockstep: install  ## train CONV (or IMPL; default vanilla; a name or a spec) and nn.Conv2d side by side (ARGS=--steps 20 etc.)
	CONVLAB_DATA_MIRROR=$${CONVLAB_DATA_MIRROR:-$(TEST_MIRROR)} $(RUN) python -m convlab.lockstep \
		'conv=$(or $(CONV),$(IMPL),vanilla)' $(ARGS)

does-it-learn: install  ## the does-it-learn sweep (EXPERIMENT=does_it_learn_vanilla, CONV=torch,path/to/my_conv.py:MyConv2d), then its report
	CONVLAB_DATA_MIRROR=$${CONVLAB_DATA_MIRROR:-$(TEST_MIRROR)} $(RUN) python train.py -m \
		experiment=$(or $(EXPERIMENT),does_it_learn) $(if $(CONV),'conv.name=$(CONV)') $(ARGS)
	$(RUN) python -m convlab.report

report: install  ## does-it-learn table, verdicts, report.md + report.png of a sweep (SWEEP=dir, default newest)
	$(RUN) python -m convlab.report $(SWEEP)

readme: install  ## refresh the results blocks of README.md and docs/*.md from the files under docs/results/
	$(RUN) python scripts/readme_include.py

docs-check: install  ## run every command README.md and docs/*.md print, the sweeps too (hours)
	CONVLAB_DATA_MIRROR=$${CONVLAB_DATA_MIRROR:-$(abspath $(TEST_MIRROR))} CONVLAB_DOCS_COMMANDS=all \
		$(RUN) pytest -p no:cacheprovider tests/test_docs_commands.py

clean:  ## remove the environment and caches (keeps outputs/ and data/)
	rm -rf .venv .pytest_cache .ruff_cache .hypothesis
