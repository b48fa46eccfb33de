# Two commands: `make run` and `make test`. Both create .venv and install what is needed.
PYTHON ?= python3.11
# torch 2.13.0 is a CPU wheel on this machine's disk; any other version downloads gigabytes.
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
# The stamp is keyed on pyproject.toml and the torch pin: a second call installs nothing.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)-$(subst =,_,$(subst /,_,$(TORCH)))

export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

run: $(STAMP)
	$(BIN)/dvc repro
	@echo "Outputs: data/ (tables, embeddings), models/, metrics/, plots/ — see README 'What make run produces'."

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf data models metrics plots reports .dvc/tmp
