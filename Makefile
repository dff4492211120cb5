# Quick start: `make serve` serves predictions on http://localhost:5000; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# tritonclient and kserve, which the tests drive against the server (requirements-clients.txt)
CLIENTS_VENV ?= .venv-clients
PORT ?= 5000

.PHONY: serve test test-unit system-deps lint crd chart images bench bench-operator bench-node bench-images install-server install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install-server: $(BIN)/python
	$(BIN)/pip install --quiet -e './modelserver[cpu]'

# The operator in a pip call of its own, last: kubernetes (>= 37) wants python-dateutil >= 3 and
# botocore (the server's boto3) < 3, so no single install resolves. The two never share an image,
# only this venv, where botocore works with dateutil 4 (tests/modelserver/test_fetch.py fetches
# from a real S3 server); pip names the conflict, and exits 0.
install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e './modelserver[cpu]' -r requirements-dev.txt
	$(BIN)/pip install --quiet -e ./operator
	test -x $(CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/pip install --quiet -r requirements-clients.txt

serve: install-server
	@echo "Starting the model server on port $(PORT); once ready, try:"
	@echo "  curl -F image=@examples/images/dog.jpg http://localhost:$(PORT)/predict"
	$(BIN)/modelserver serve --port $(PORT)

# Debian's packages for the e2e and browser tests (buildah, the node's, chromium), where missing.
system-deps:
	scripts/system-deps.sh

# Every tier: unit, emulator, plane, slow (model servers) and node (the real node; root).
test: install-dev system-deps
	$(BIN)/pytest

# The fast tier alone, in under a minute: no model server, plane, emulator or node
# (tests/conftest.py gives each test its tier from what it uses).
test-unit: install-dev
	$(BIN)/pytest -m unit

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Both images with buildah, offline: a local base, seeded weights (scripts/build-images.sh).
images: install-server
	PYTHON=$(BIN)/python scripts/build-images.sh

# The CRD from the operator's pydantic spec, and the chart's copy of it.
crd: install-dev
	$(BIN)/python -m kubeclassify_operator crd --output crds/imageclassifier.yaml
	cp crds/imageclassifier.yaml charts/kubeclassify/crds/imageclassifier.yaml

# The chart archive: helm lint --strict, then helm package (Helm SDK): dist/kubeclassify-<version>.tgz
chart: install-dev
	$(BIN)/python tests/support/helm.py package dist

bench: install-dev
	$(BIN)/python bench/server_load.py
	$(BIN)/python bench/server_overload.py
	$(BIN)/python bench/server_protocols.py

bench-operator: install-dev
	$(BIN)/python bench/operator_scale.py

# On the real node (root, buildah, ../shared): apply to Ready, and the node port against the same
# image as a plain process; attaches to $KUBECLASSIFY_E2E_K8S_RUN's cluster, else runs its own.
bench-node: install-dev
	$(BIN)/python bench/node_e2e.py

# On the real node (root, buildah, ../shared): the lean default server image against today's (built
# from BASELINE_REF's worktree in /tmp): apply to Ready, start to /readyz, sizes, throughput, memory.
BASELINE_REF ?= 9b35e0a
bench-images: install-dev
	$(BIN)/python bench/images.py --baseline-ref $(BASELINE_REF)

clean:
	rm -rf $(VENV)
