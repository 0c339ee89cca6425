# `make test` and `make demo` create the virtual environment when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo venv clean bench flops

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# The main job: Table 3a x 3 seeds on the synthetic set with the CPU-sized model, tracked in
# MLflow, then the report. Two trials run side by side (one core each). Rerunning resumes:
# finished trials are skipped.
DEMO_WORKERS ?= 2
demo: $(STAMP)
	test -f data/synth/SYNTHETIC.txt || $(BIN)/lvas data synth --out data/synth
	$(BIN)/lvas sweep sweeps/quickstart.yaml --quiet --workers $(DEMO_WORKERS)
	$(BIN)/lvas report sweeps/quickstart.yaml
	$(BIN)/lvas flops --table > /dev/null
	@echo
	@echo "Tables:  reports/quickstart/table3a_components.md (.tex, .csv)"
	@echo "Figures: reports/quickstart/figures/"
	@echo "Index:   reports/README.md"
	@echo "MLflow:  $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db   (then open http://127.0.0.1:5000)"

flops: $(STAMP)
	$(BIN)/lvas flops --table

bench: $(STAMP)
	$(BIN)/lvas bench model experiments/cstm_paper.yaml

clean:
	rm -rf $(VENV) .pytest_cache
