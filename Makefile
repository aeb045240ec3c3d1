# marble-eval: `make eval` and `make test` do their own set-up into .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# MODEL may name several models ("A B"), DATASET several datasets ("makam,lyra" or all); RECIPE, SEEDS and
# PROTOCOL default to the protocol preset's (culturemert: mlp, 5 seeds).
MODEL   ?= fixture
DATASET ?= fixture
RECIPE  ?=
SEEDS   ?=
PROTOCOL ?=
RESULTS ?= results
DATA_DIR ?=
DATA_CONFIG ?=
EVAL_ARGS ?=

.PHONY: setup test test-fast lint eval bench bench-gpu leaderboard clean

$(VENV)/.installed: pyproject.toml scripts/setup_env.sh
	VENV=$(VENV) PYTHON=$(PYTHON) scripts/setup_env.sh
	touch $@

setup: $(VENV)/.installed

# every test (unit and integration: CLI runs, the wheel, e2e evals, DDP, the golden run, bench smoke)
test: setup
	$(PY) -m pytest -q

# the quick loop: unit tests only
test-fast: setup
	$(PY) -m pytest -q -m "not integration"

lint: setup
	$(PY) -m ruff check marble_eval tests bench scripts

eval: setup
	$(PY) -m marble_eval eval $(foreach m,$(MODEL),--model $(m)) --dataset $(DATASET) --results-dir $(RESULTS) $(if $(RECIPE),--recipe $(RECIPE)) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(PROTOCOL),--protocol $(PROTOCOL)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(DATA_CONFIG),--data-config $(DATA_CONFIG)) $(EVAL_ARGS)

leaderboard: setup
	$(PY) -m marble_eval leaderboard --results-dir $(RESULTS)

bench: setup
	$(PY) -m bench

# the prepared GPU check: one JSON object (docs/scale.md); `--device cpu --smoke` is the CI form
bench-gpu: setup
	$(PY) -m bench.gpu_check

clean:
	rm -rf $(VENV) .pytest_cache
