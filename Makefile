# `make test` and `make demo` create the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help test demo compare ui venv clean bench flops
.DEFAULT_GOAL := help

help:  ## this list
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-6s %s\n", $$1, $$2}'

venv: $(STAMP)  ## create .venv and install lvas with its test extras

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: $(STAMP)  ## the test suite (what CI runs)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

# The main job: Table 3a x 3 seeds on the synthetic set with the CPU-sized model, tracked in
# MLflow, then the report. Two trials run side by side (one core each). Rerunning resumes:
# finished trials are skipped.
DEMO_WORKERS ?= 2
demo: $(STAMP)  ## Table 3a x 3 seeds on the synthetic set, tracked in MLflow, then the report
	test -f data/synth/SYNTHETIC.txt || $(BIN)/lvas data synth --out data/synth
	$(BIN)/lvas sweep sweeps/quickstart.yaml --quiet --workers $(DEMO_WORKERS)
	$(BIN)/lvas report sweeps/quickstart.yaml
	$(BIN)/lvas flops --table > /dev/null
	@echo
	@echo "Tables:  reports/quickstart/table3a_components.md (.tex, .csv)"
	@echo "Figures: reports/quickstart/figures/"
	@echo "Index:   reports/README.md"
	@echo "MLflow:  make ui   (then open the 'MLflow UI' link printed above)"

# "Did my conclusions survive?": the quickstart sweep again, in a store of its own (another machine, another
# commit, another float path: ATEN_CPU_CAPABILITY=avx2 make compare), reported and compared with the
# committed reports/quickstart: each row side by side, the Δ between the runs, every verdict; exit 1 if one flips.
RERUN ?= rerun
compare: $(STAMP)  ## rerun the quickstart sweep and compare it with reports/quickstart (verdicts must hold)
	test -f data/synth/SYNTHETIC.txt || $(BIN)/lvas data synth --out data/synth
	$(BIN)/lvas sweep sweeps/quickstart.yaml --quiet --workers $(DEMO_WORKERS) \
	  --tracking-uri sqlite:///$(CURDIR)/$(RERUN)/mlflow.db --out $(RERUN)/sweeps
	$(BIN)/lvas report sweeps/quickstart.yaml --tracking-uri sqlite:///$(CURDIR)/$(RERUN)/mlflow.db \
	  --out $(RERUN)/reports --no-figures
	$(BIN)/lvas compare reports/quickstart $(RERUN)/reports/quickstart --out $(RERUN)/compare.md

# The MLflow UI on the project's store, on loopback only (nothing to the network); UI_PORT to move it.
UI_PORT ?= 5000
ui: $(STAMP)  ## the MLflow UI on this project's runs (http://127.0.0.1:5000)
	@echo "Open the link lvas sweep / lvas report printed (MLflow UI (runs grouped by row): ...); the plain"
	@echo "http://127.0.0.1:$(UI_PORT) opens MLflow's GenAI page: click Model training, then the experiment."
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(UI_PORT)

flops: $(STAMP)  ## Table 4 (GFLOPs) to reports/
	$(BIN)/lvas flops --table

bench: $(STAMP)  ## time and memory of the paper model
	$(BIN)/lvas bench model experiments/cstm_paper.yaml

clean:  ## remove .venv and caches (runs, reports and mlflow.db stay)
	rm -rf $(VENV) .pytest_cache
