# Two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
TORCH_PIN := torch==2.13.0
CORES ?= 2

.PHONY: demo test venv clean

venv: $(STAMP)

# torch is installed first and pinned, so the project's `torch>=2.4` is already satisfied and pip
# downloads no other (CUDA) build. `make demo` installs the pipeline's dependencies only; `make test`
# adds the test tools (the `test` extra). Each stamp is re-made whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/default --cores $(CORES)
	$(BIN)/snakemake --profile profiles/default --report results/report.html
	@echo "Outputs are in results/; the report is results/report.html"

test: $(TEST_STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf results resources/demo .snakemake
