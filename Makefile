# One command per pipeline step; each creates the virtualenv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DIGITS := $(BIN)/digits
CONFIG ?= quick
SOURCE ?= kaggle
LAYOUT ?= kaggle
RUN ?= latest

.PHONY: help venv download train ensemble evaluate submit submissions demo report describe \
        kernel kernel-push kernel-status kernel-output test test-all lint bench clean

help:
	@echo "make download [SOURCE=kaggle|mnist] [LAYOUT=kaggle|official] [FORCE=1]"
	@echo "make train [CONFIG=quick|fast|strong|full|tiny] [ARGS='--set epochs=5']"
	@echo "make submit [FILE=submissions/<run>.csv] [MESSAGE='...']   make submissions"
	@echo "make demo      offline: MNIST -> Kaggle-shaped CSVs -> train quick -> submission -> accuracy"
	@echo "make ensemble RUN=<run> [MEMBERS=0,2]   make evaluate [FILE=...]   make report [RUN=...]"
	@echo "make kernel [CONFIG=full]   make kernel-push | kernel-status | kernel-output"
	@echo "make test   make test-all (with slow tests)   make lint   make bench [SMOKE=1]"

$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt -e .
	touch $@

venv: $(BIN)/.installed

download: venv
	$(DIGITS) download --source $(SOURCE) --layout $(LAYOUT) $(if $(FORCE),--force) $(ARGS)

train: venv
	$(DIGITS) train --config $(CONFIG) $(ARGS)

ensemble: venv
	$(DIGITS) ensemble $(RUN) $(if $(MEMBERS),--members $(MEMBERS))

evaluate: venv
	$(DIGITS) evaluate $(or $(FILE),latest)

submit: venv
	$(DIGITS) submit $(FILE) $(if $(MESSAGE),-m "$(MESSAGE)") $(ARGS)

submissions: venv
	$(DIGITS) submissions $(ARGS)

demo: venv
	$(DIGITS) download --source mnist --layout kaggle
	$(DIGITS) train --config quick $(ARGS)
	$(DIGITS) evaluate latest

report: venv
	$(DIGITS) report $(RUN)

describe: venv
	$(DIGITS) describe --config $(CONFIG)

kernel: venv
	$(DIGITS) kernel build --config $(or $(filter-out quick,$(CONFIG)),full) $(ARGS)

kernel-push: venv
	$(DIGITS) kernel push $(ARGS)

kernel-status: venv
	$(DIGITS) kernel status $(ARGS)

kernel-output: venv
	$(DIGITS) kernel output $(ARGS)

test: venv
	$(BIN)/python -m pytest -q

test-all: venv
	$(BIN)/python -m pytest -q -m "slow or not slow"

lint: venv
	$(BIN)/ruff check src tests

bench: venv
	$(DIGITS) bench $(if $(SMOKE),--smoke) $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf build .pytest_cache data/cache
