# Set-up is part of every target: the venv is made when missing, and the project installed again
# when pyproject.toml or requirements.lock changes or another set of EXTRAS is asked for.
PYTHON ?= python3
VENV ?= .venv
# torch==2.13.0 is a CPU wheel on the development machines' disk (installs in seconds); from
# PyPI on another Linux machine the same pin is a CUDA build. To reuse a torch you already have
# (a cluster's CUDA build), make the venv on top of it, on a fresh clone or after `make clean`:
#   make train TORCH_SPEC= VENV_FLAGS=--system-site-packages
TORCH_SPEC ?= torch==2.13.0
VENV_FLAGS ?=
# extras installed with the project: dev (tests, linters, launchers); add peers for make uci's
# NGBoost (make uci EXTRAS=dev,peers), sbi for data=sbibm and make sbi (sbibm, installed
# without its dependencies, and sbi's NPE), docs for the site and the notebook's kernel, optuna,
# mlflow, wandb. A new set installs into the same venv (what an earlier set added stays).
EXTRAS ?= dev
BIN := $(VENV)/bin
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install train lint format test test-fast test-cluster tensorboard clean hooks

install: $(STAMP)

# torch by pip (it finds a wheel on the local disk where there is one), the rest by uv, which
# installed them in half pip's time on a fresh clone (55 s against 116 s, 2-core AMD EPYC). uv does not see a --system-site-packages torch (astral-sh/uv#7358)
# and would fetch another: a venv made on a cluster's torch installs the rest with pip.
INSTALLER = $(if $(findstring system-site-packages,$(VENV_FLAGS)),$(BIN)/python -m pip install,$(BIN)/uv pip install --python $(BIN)/python)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(if $(strip $(TORCH_SPEC)),$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)")
	$(if $(findstring system-site-packages,$(VENV_FLAGS)),,$(BIN)/python -m pip install --quiet -c requirements.lock uv)
	$(INSTALLER) --quiet -c requirements.lock -e '.[$(EXTRAS)]' -C editable_mode=compat
	$(if $(filter sbi,$(subst $(comma), ,$(EXTRAS))),$(INSTALLER) --quiet --no-deps -c requirements.lock sbibm)
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/mdn-train $(ARGS)

# ruff's linter and formatter (make format rewrites what the check refuses), then mypy
LINTED := src scripts tests notebooks
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

test: lint
	$(BIN)/python -m pytest -n auto --dist worksteal -m "not cluster" $(PYTEST_ARGS)

# everything but the end-to-end runs in subprocesses
test-fast: lint
	$(BIN)/python -m pytest -n auto --dist worksteal -m "not slow and not cluster" $(PYTEST_ARGS)

# hydra/launcher=slurm against a one-node SLURM cluster that the tests start and stop
# (scripts/slurm_cluster.sh; needs root and Debian's slurmctld slurmd slurm-client munge)
test-cluster: $(STAMP)
	$(BIN)/python -m pytest -m cluster $(PYTEST_ARGS)

# requirements.lock: every package the extras pull in, at the versions a fresh venv gets today,
# except torch and its own dependencies (TORCH_SPEC decides those). Built in a throw-away venv.
.PHONY: lock
LOCK_VENV := build/lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(if $(strip $(TORCH_SPEC)),$(LOCK_VENV)/bin/python -m pip install --quiet "$(TORCH_SPEC)")
	$(LOCK_VENV)/bin/python -m pip install --quiet -e '.[dev,peers,docs,sbi]' pre-commit uv
	$(LOCK_VENV)/bin/python -m pip install --quiet --no-deps sbibm==1.1.0
	{ sed -n '1,3p' requirements.lock; $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | grep -v -i -E \
	  '^(torch|nvidia-|triton|sympy|mpmath|networkx|jinja2|markupsafe|filelock|fsspec|typing.extensions|setuptools)=='; \
	  } > requirements.lock.new && mv requirements.lock.new requirements.lock
	rm -rf $(LOCK_VENV)

# pre-commit's hooks (.pre-commit-config.yaml: ruff check, mypy) on every commit
hooks: $(STAMP)
	$(BIN)/python -m pip install --quiet -c requirements.lock pre-commit
	$(BIN)/pre-commit install

# TB_FLAGS="--bind_all" to serve on every interface (e.g. from a cluster node)
TB_FLAGS ?= --host localhost
tensorboard: $(STAMP)
	$(BIN)/tensorboard --logdir $${MDNLAB_LOG_DIR:-logs} $(TB_FLAGS)

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: bench compare robot-arm uci sbi
# sbibm's inverse problems: the MDN (and sbi's NPE, --peers) on every task and budget, scored by
# C2ST against the reference posteriors: make sbi EXTRAS=dev,sbi ARGS="--tasks two_moons --budgets 1000"
sbi: $(STAMP)
	$(BIN)/python scripts/sbi_benchmark.py $(ARGS)

# The UCI benchmark: make uci ARGS="--root /path/to/UCI_Datasets" (or MDNLAB_UCI_ROOT=...)
uci: $(STAMP)
	$(BIN)/python scripts/uci.py $(ARGS)

bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(ARGS)

# what pruning saves a search (scripts/bench_search.py): make bench-search ARGS=prune, or
# ARGS="uci --root /path/to/UCI_Datasets" (the staged grid against the pruned search)
.PHONY: bench-search
bench-search: $(STAMP)
	$(BIN)/python scripts/bench_search.py $(ARGS)

# 32 default-recipe models as 32 SLURM jobs and as one stacked_slurm job, on a one-node SLURM
# cluster the script starts and stops (root and Debian's SLURM packages, as make test-cluster)
.PHONY: bench-cluster
bench-cluster: $(STAMP)
	$(BIN)/python scripts/bench_cluster.py $(ARGS)

compare: $(STAMP)
	$(BIN)/python scripts/compare.py $(ARGS)

# Bishop's robot arm: least squares against the MDN, seeds 0-2, end-effector RMS errors
robot-arm: $(STAMP)
	$(BIN)/python scripts/compare.py --recipes robot_arm_mse robot_arm_mdn $(ARGS)

# A grid over the MDN's size; LAUNCHER=basic runs the jobs one after another.
SWEEP ?= model.n_gaussians=1,2,3,5,8 model.hidden_size=10,20,50
LAUNCHER ?= parallel
.PHONY: sweep
sweep: $(STAMP)
	@touch $(VENV)/.sweep-start; \
	$(BIN)/mdn-train -m hydra/launcher=$(LAUNCHER) $(SWEEP) figures=false \
		callbacks.rich_progress_bar=null trainer.enable_progress_bar=false $(ARGS); status=$$?; \
	latest="$$(ls -dt $${MDNLAB_LOG_DIR:-logs}/train/multiruns/*/ 2>/dev/null | head -1)"; \
	if [ -n "$$latest" ] && [ "$$latest" -nt $(VENV)/.sweep-start ]; then $(BIN)/mdn-report "$$latest"; \
	else echo "make sweep: the sweep made no directory; nothing to report" >&2; fi; exit $$status

# The documentation site (docs/, mkdocs.yml) into build/site; --strict: a broken link or a
# renamed function in the API page fails the build. The docs extra is installed on first use.
.PHONY: docs docs-serve
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(INSTALLER) --quiet -c requirements.lock -e '.[$(EXTRAS),docs]' -C editable_mode=compat
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict

docs-serve: $(DOCS_STAMP)
	$(BIN)/mkdocs serve
