# One command per pipeline step; each creates the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DIGITS := $(BIN)/digits
CONFIG ?= quick
SOURCE ?= kaggle
LAYOUT ?= kaggle
RUN ?= latest

.PHONY: help venv download train plan ensemble evaluate submit submissions demo report describe \
        kernel kernel-push kernel-status kernel-output test test-all lint bench clean grow runs

help: ## show this list (each target's comment in the Makefile)
	@awk -F':.*## ' '/^[a-z][a-z-]*:.*## / {printf "make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt -e .
	touch $@

venv: $(BIN)/.installed ## create the virtualenv .venv [VENV=dir] (every target does this first)

download: venv ## get the data into data/ [SOURCE=kaggle|mnist] [LAYOUT=kaggle|official] [FORCE=1]
	$(DIGITS) download --source $(SOURCE) --layout $(LAYOUT) $(if $(FORCE),--force) $(ARGS)

train: venv ## train an ensemble, write a submission [CONFIG=quick|fast|strong|full|tiny] [ARGS='--set epochs=5']
	$(DIGITS) train --config $(CONFIG) $(ARGS)

plan: venv ## show what a time budget buys on this machine, without training [BUDGET=10m] [CONFIG=quick]
	$(DIGITS) plan --config $(CONFIG) --budget $(or $(BUDGET),10m) $(ARGS)

grow: venv ## train more members into a run RUN=<run> MEMBERS=N, or BUDGET=10m (as many as fit)
	$(DIGITS) train --resume $(RUN) $(if $(MEMBERS),--members $(MEMBERS)) $(if $(BUDGET),--budget $(BUDGET)) $(ARGS)

ensemble: venv ## average a run's members into a submission RUN=<run> [MEMBERS=0,2]; RUN="<run> <run>" blends runs
	$(DIGITS) ensemble $(RUN) $(if $(MEMBERS),--members $(MEMBERS))

runs: venv ## list the runs: members, nets, holdout/test accuracy, minutes, state, submission [ARGS=--json]
	$(DIGITS) runs $(ARGS)

evaluate: venv ## score a submission against data/answers.csv [FILE=submissions/<run>.csv]
	$(DIGITS) evaluate $(or $(FILE),latest)

submit: venv ## send a submission to Kaggle, wait for its public score [FILE=...] [MESSAGE='...'] [WAIT=300] [ARGS=--no-wait]
	$(DIGITS) submit $(FILE) $(if $(MESSAGE),-m "$(MESSAGE)") $(if $(WAIT),--wait $(WAIT)) $(ARGS)

submissions: venv ## list your recent Kaggle submissions and scores; record the pending ones' scores in their runs
	$(DIGITS) submissions $(ARGS)

demo: venv ## offline, under 10 min: MNIST -> Kaggle-shaped CSVs -> quick in a 9-min budget -> score [BUDGET=9m]
	$(DIGITS) download --source mnist --layout kaggle
	$(DIGITS) train --config quick --budget $(or $(BUDGET),9m) $(ARGS)
	$(DIGITS) evaluate latest

report: venv ## rebuild a run's figures and report.html [RUN=latest|<run>]
	$(DIGITS) report $(RUN)

describe: venv ## show each member's architecture and parameter counts [CONFIG=quick]
	$(DIGITS) describe --config $(CONFIG)

kernel: venv ## build the Kaggle kernel, a notebook: build/kernel/digits_kernel.ipynb [CONFIG=full] [GPU=t4|none]
	$(DIGITS) kernel build --config $(if $(filter file,$(origin CONFIG)),full,$(CONFIG)) $(if $(GPU),--gpu $(GPU)) $(ARGS)

kernel-push: venv ## push the built kernel to Kaggle
	$(DIGITS) kernel push $(ARGS)

kernel-status: venv ## show the pushed kernel's status
	$(DIGITS) kernel status $(ARGS)

kernel-output: venv ## fetch the kernel's output
	$(DIGITS) kernel output $(ARGS)

test: venv ## run the tests (slow ones skipped)
	$(BIN)/python -m pytest -q

test-all: venv ## run every test, slow ones too
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: venv ## ruff check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

bench: venv ## measure accuracy and speed per CPU class, rewrite docs/BENCHMARKS.md [SMOKE=1] [ONLY=rows|recipes|ablation|curve|table|parallel] [CPU=bf16|avx2]
	$(BIN)/python -m benchmarks.bench $(if $(SMOKE),--smoke) $(if $(ONLY),--only $(ONLY)) $(if $(CPU),--cpu $(CPU)) \
	    $(if $(REPEATS),--repeats $(REPEATS)) $(ARGS)

clean: ## remove build/, .pytest_cache and data/cache
	rm -rf build .pytest_cache data/cache
