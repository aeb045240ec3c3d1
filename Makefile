# marble-eval: `make eval` and `make test` do their own set-up into .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
MODEL   ?= fixture
DATASET ?= fixture
RECIPE  ?= mlp
SEEDS   ?= 5
RESULTS ?= results
DATA_DIR ?=
EVAL_ARGS ?=

.PHONY: setup test eval bench leaderboard clean

$(VENV)/.installed: pyproject.toml scripts/setup_env.sh
	VENV=$(VENV) PYTHON=$(PYTHON) scripts/setup_env.sh
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

eval: setup
	$(PY) -m marble_eval eval --model $(MODEL) --dataset $(DATASET) --recipe $(RECIPE) --seeds $(SEEDS) --results-dir $(RESULTS) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(EVAL_ARGS)
	$(PY) -m marble_eval leaderboard --results-dir $(RESULTS)

leaderboard: setup
	$(PY) -m marble_eval leaderboard --results-dir $(RESULTS)

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache
