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

demo: $(STAMP)
	$(BIN)/lvas list
	$(BIN)/lvas flops experiments/cstm_paper.yaml --frames 8 --size 320

flops: $(STAMP)
	$(BIN)/lvas flops --table

bench: $(STAMP)
	$(BIN)/lvas bench model experiments/cstm_paper.yaml

clean:
	rm -rf $(VENV) .pytest_cache
