# Everything a fresh machine needs, from two commands: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DATA_DIR ?= $(CURDIR)/data
export BENTOML_HOME ?= $(DATA_DIR)/bentoml
export BENTOML_DO_NOT_TRACK ?= true
SERVE_PORT ?= 3001
TEST_WORKERS ?= 2

.PHONY: install run dev serve demo stream-demo test test-fast check-data validate lock clean stack-up stack-down stack-status dashboards metrics-exporter

install: $(STAMP)

# torch first, pinned: the CPU wheel on this machine's disk; an open `torch` would pull a CUDA build.
# pip's output goes to a log (a machine's own pip configuration can add hundreds of lines); on a
# failure its end is shown.
$(STAMP): pyproject.toml constraints.txt
	@echo "installing into $(VENV) (a few minutes the first time; log: $(VENV)/install.log)"
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install --quiet --upgrade pip && \
	   $(BIN)/pip install --quiet "torch==$$(grep -i '^torch==' constraints.txt | cut -d= -f3)" && \
	   $(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'; } > $(VENV)/install.log 2>&1 \
	  || { tail -n 30 $(VENV)/install.log >&2; echo "install failed: the whole log is $(VENV)/install.log" >&2; exit 1; }
	@touch $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster-local.yaml
	@mkdir -p $(DAGSTER_HOME)
	@cp deploy/dagster-local.yaml $(DAGSTER_HOME)/dagster.yaml

## run the main job on embedded defaults against the instance `make dev` shows
run: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	@$(BIN)/flightdelay run

## the Dagster UI (and daemon, so sensors and schedules run) on http://127.0.0.1:3000
dev: $(STAMP) $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

## serve the newest verified Bento (its parity check passed) on http://127.0.0.1:$(SERVE_PORT); needs SERVICE_API_TOKEN;
## HTTPS only with SERVICE_TLS_CERTFILE and SERVICE_TLS_KEYFILE (docs/tls.md)
serve: $(STAMP)
	@if [ -z "$$SERVICE_API_TOKEN" ] && [ "$$SERVICE_AUTH_DISABLED" != "true" ]; then \
	  echo "make serve: set SERVICE_API_TOKEN (clients send 'Authorization: Bearer <token>'), e.g." >&2; \
	  echo "  SERVICE_API_TOKEN=\$$(openssl rand -hex 32) make serve" >&2; \
	  echo "or, on a trusted machine only, SERVICE_AUTH_DISABLED=true make serve" >&2; exit 2; fi
	@if [ -n "$$SERVICE_TLS_KEYFILE" ] && [ -z "$$SERVICE_TLS_CERTFILE" ]; then \
	  echo "make serve: SERVICE_TLS_KEYFILE is set but SERVICE_TLS_CERTFILE is not: set both for HTTPS (docs/tls.md)" >&2; exit 2; fi
	tag=$$($(BIN)/flightdelay verified-bento) && \
	  $(BIN)/bentoml serve "$$tag" --host 127.0.0.1 -p $(SERVE_PORT) \
	    $${SERVICE_TLS_CERTFILE:+--ssl-certfile "$$SERVICE_TLS_CERTFILE"} $${SERVICE_TLS_KEYFILE:+--ssl-keyfile "$$SERVICE_TLS_KEYFILE"}

## watch a day stream in: embedded NATS, the stream processor (scoring the newest verified model: make run first),
## a replay at 600x with predictions printed live; Ctrl-C stops it (docs/streaming.md)
stream-demo: $(STAMP)
	@$(BIN)/flightdelay stream-demo $(STREAM_DEMO_ARGS)

## replay 2013 day by day with the daemon running: drift, retraining, new champions and Bentos (data/demo)
demo: $(STAMP)
	$(BIN)/flightdelay demo $(DEMO_ARGS)

## the import rules (pyproject's [tool.importlinter]), the whole suite (slow tests included) on both cores,
## the latency comparisons alone on the machine, then the asset checks on a sample of real days (docs/testing.md)
test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not serial"
	$(BIN)/python -m pytest -m serial
	$(MAKE) --no-print-directory check-data validate

## unit, asset and sensor tests: no servers, no trainings beyond a few epochs (about a minute)
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow and not server and not serial"

## materialize a sample of partitions into a throwaway lake; exit 1 if any check fails
check-data: $(STAMP)
	tmp=$$(mktemp -d) && DATA_DIR=$$tmp DAGSTER_HOME= $(BIN)/flightdelay check-data --replay --from 2013-01-01 --to 2013-01-07; rc=$$?; rm -rf $$tmp; exit $$rc

validate: $(STAMP)
	tmp=$$(mktemp -d) && DAGSTER_HOME=$$tmp $(BIN)/dagster definitions validate -w workspace.yaml; rc=$$?; rm -rf $$tmp; exit $$rc

## the production stack on this machine, no Docker (docs/production-stack.md): Postgres databases, S3 (moto),
## mlflow server, code server, webserver on http://127.0.0.1:3000, daemon; state and logs in .stack/ (STACK_DIR)
stack-up: $(STAMP)
	$(BIN)/flightdelay stack up

## stop every process the stack started (nothing is left behind)
stack-down:
	$(BIN)/flightdelay stack down

stack-status:
	$(BIN)/flightdelay stack status

## the pipeline's metrics for Prometheus on http://127.0.0.1:9464/metrics (METRICS_EXPORTER_HOST/PORT), read from the instance at DAGSTER_HOME
metrics-exporter: $(STAMP)
	$(BIN)/flightdelay metrics-exporter

## regenerate the Grafana dashboards (deploy/monitoring/dashboards/*.json) from deploy/monitoring/dashboards.py
dashboards: $(STAMP)
	$(BIN)/python deploy/monitoring/dashboards.py

## regenerate the pinned set after changing pyproject's ranges
lock: $(STAMP)
	{ echo "# Pinned set for reproducible installs (pip install -c constraints.txt). Python 3.11."; \
	  echo "# Open ranges live in pyproject.toml; regenerate with: make lock"; \
	  $(BIN)/pip freeze --exclude-editable | sort -f; } > constraints.txt

clean:
	rm -rf data .dagster_home .pytest_cache

.PHONY: audit-trail importance-drift
## a model version's life from the audit log (trained, promoted, deployed, served, superseded): make audit-trail VERSION=3
audit-trail: $(STAMP)
	@if [ -z "$(VERSION)" ]; then echo "make audit-trail: name the model version, e.g. make audit-trail VERSION=3" >&2; exit 2; fi
	$(BIN)/flightdelay audit-trail $(VERSION)

## the champions' feature-group importance side by side, oldest first (make importance-drift LAST=5 for the newest 5)
importance-drift: $(STAMP)
	$(BIN)/flightdelay importance-drift $(if $(LAST),--last $(LAST),)
