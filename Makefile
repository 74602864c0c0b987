# The two commands: `make dev` runs the whole stack on its embedded defaults,
# `make test` runs every test (CI runs it through .ci/run).
export GOTOOLCHAIN := local
# A pipe fails when any part fails (the load targets pipe go test into grep).
SHELL := bash
.SHELLFLAGS := -o pipefail -ec
GO ?= go
BIN := .bin
# The pinned tools (tools/); the tests also need Temporal Server's.
TOOLS := $(BIN)/temporal $(BIN)/mailpit $(BIN)/stripe-mock $(BIN)/dex $(BIN)/workflowcheck
SERVER_TOOLS := $(BIN)/temporal-server $(BIN)/temporal-sql-tool
# The tools link without debug information: a third of a cold link of the
# large ones (Temporal's) goes to it, and nobody debugs them here.
TOOL_BUILD := build -ldflags='-s -w'

.PHONY: dev test test-unit test-e2e test-e2e-faults tools test-tools lint fuzz bench load load-server load-memory faults replay-live topology scale clean

dev: tools
	$(GO) run ./cmd/devstack

# Every test. The pinned tools build side by side, and beside the lint; the
# tests then run as parallel go test processes (the unit packages, the fault
# suite, the rest of the end-to-end tests, the fuzzing): on 2 cores most of
# the end-to-end time is waiting (outages, retries, timers), which the other
# processes use. Each process's output shows when it ends.
test:
	@$(MAKE) --no-print-directory -j8 --output-sync=target $(TOOLS) $(SERVER_TOOLS) lint
	@$(MAKE) --no-print-directory -j4 --output-sync=target test-unit test-e2e test-e2e-faults fuzz

FAULT_TESTS := ^TestFault
test-unit:
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/e2e$$')
test-e2e: $(TOOLS) $(SERVER_TOOLS)
	$(GO) test -count=1 -timeout 25m -skip '$(FAULT_TESTS)' ./e2e/
test-e2e-faults: $(TOOLS) $(SERVER_TOOLS)
	$(GO) test -count=1 -timeout 25m -run '$(FAULT_TESTS)' ./e2e/

# Pinned tools, each in its own module under tools/, built once into .bin/,
# side by side (most of a cold build is downloads and links).
tools:
	@$(MAKE) --no-print-directory -j8 --output-sync=target $(TOOLS)

# The tests need Temporal Server too (the production topology), which make
# dev does not.
test-tools:
	@$(MAKE) --no-print-directory -j8 --output-sync=target $(TOOLS) $(SERVER_TOOLS)

# The Temporal CLI (its dev server) and Temporal Server with its SQL tool
# are pinned in one module, tools/temporal, so they share one build list:
# the server's packages, most of a cold build, compile once for the CLI and
# come from the build cache for the server, which is built after it.
$(BIN)/temporal: tools/temporal/go.mod tools/temporal/go.sum
	cd tools/temporal && $(GO) $(TOOL_BUILD) -o ../../$@ github.com/temporalio/cli/cmd/temporal
$(BIN)/temporal-server: $(BIN)/temporal
	cd tools/temporal && $(GO) $(TOOL_BUILD) -o ../../$@ go.temporal.io/server/cmd/server
$(BIN)/temporal-sql-tool: $(BIN)/temporal
	cd tools/temporal && $(GO) $(TOOL_BUILD) -o ../../$@ go.temporal.io/server/cmd/tools/sql
$(BIN)/mailpit: tools/mailpit/go.mod tools/mailpit/go.sum
	cd tools/mailpit && $(GO) $(TOOL_BUILD) -o ../../$(BIN)/ tool
$(BIN)/stripe-mock: tools/stripemock/go.mod tools/stripemock/go.sum
	cd tools/stripemock && $(GO) $(TOOL_BUILD) -o ../../$(BIN)/ tool
# Dex, the OpenID Provider of make dev and the e2e tests (state in memory:
# built without cgo, so no C compiler is needed for its SQLite driver).
$(BIN)/dex: tools/dex/go.mod tools/dex/go.sum
	cd tools/dex && CGO_ENABLED=0 $(GO) $(TOOL_BUILD) -o ../../$(BIN)/ tool
$(BIN)/workflowcheck: tools/workflowcheck/go.mod tools/workflowcheck/go.sum
	cd tools/workflowcheck && $(GO) $(TOOL_BUILD) -o ../../$(BIN)/ tool

lint: $(BIN)/workflowcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }
	$(GO) vet ./...
	$(BIN)/workflowcheck ./workflows/... ./reconcile/...

# A short fuzzing run of the webhook handler (seed corpus in webhook/testdata),
# counted in executions, not seconds: a duration races Go 1.26's fuzz
# coordinator on a loaded machine and fails with "context deadline exceeded"
# without any failing input (golang/go#75804, fixed in Go 1.27).
fuzz:
	$(GO) test -run '^$$' -fuzz FuzzHandler -fuzztime 30000x -timeout 10m ./webhook/

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./webhook/
	$(GO) test -run '^$$' -bench NormalizeName -benchmem ./activities/

# The load tool's report on a fresh stack (in-memory dev server, SQLite, and
# PostgreSQL with TEST_DATABASE_URL): 400 sessions at concurrency 32, then an
# open-model run at 22 events/s (about half the end-to-end capacity). LOAD_SESSIONS, LOAD_CONCURRENCY, LOAD_RATE
# and the WORKER_* tuning variables change it.
load: tools
	LOAD_TARGETS=1 LOAD_SESSIONS=$${LOAD_SESSIONS:-300} LOAD_ACK_EVENTS=$${LOAD_ACK_EVENTS:-300} \
	$(GO) test -count=1 -v -run TestPerformanceTargets -timeout 40m ./e2e/ | grep -v '^=== '
	LOAD_ACK_EVENTS=$${LOAD_ACK_EVENTS:-300} $(GO) test -count=1 -v -run TestWebhookAckOverhead -timeout 30m ./e2e/ | grep -v '^=== '

# What open sessions (timers armed) cost the worker: its memory and the
# time from a new session's start to its first timer, as they pile up to
# 100,000 (LOAD_OPEN_SESSIONS; about an hour here); set
# WORKER_STICKY_CACHE_SIZE below that to see the cache bound the memory.
load-memory: tools
	LOAD_OPEN_SESSIONS=$${LOAD_OPEN_SESSIONS:-100000} $(GO) test -count=1 -v -run TestWorkerMemoryPerOpenSessions -timeout 180m ./e2e/ | grep -v '^=== '

# The same closed-model run on Temporal Server 1.29.1 on the local PostgreSQL
# (pinned in tools/temporal, built on first use), for SQLite and PostgreSQL.
load-server: tools
	E2E_TEMPORAL=server TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable} \
	LOAD_TARGETS=1 LOAD_SESSIONS=$${LOAD_SESSIONS:-300} LOAD_ACK_EVENTS=$${LOAD_ACK_EVENTS:-300} \
	$(GO) test -count=1 -v -run TestPerformanceTargets -timeout 40m ./e2e/ | grep -v '^=== '

# The fault suite's long version: each scenario (storm, worker SIGKILL, SMTP
# down, Temporal down, database down, Stripe failing, abuse) at full size, on
# SQLite and on a fresh database of the local PostgreSQL (TEST_DATABASE_URL
# to use another). `make test` runs the short version. Prints one line per
# scenario and database.
faults: tools
	@db=faults_$$(date +%s)_$$$$; url=$${TEST_DATABASE_URL:-}; \
	if [ -z "$$url" ]; then \
	  psql -h 127.0.0.1 -U postgres -qAt -c "CREATE DATABASE $$db" && \
	  trap 'psql -h 127.0.0.1 -U postgres -qAt -c "DROP DATABASE IF EXISTS '$$db' WITH (FORCE)" >/dev/null' EXIT && \
	  url="postgres://postgres@127.0.0.1:5432/$$db?sslmode=disable"; \
	fi; \
	FAULTS=full TEST_DATABASE_URL=$$url $(GO) test -count=1 -v -run TestFault -timeout 60m ./e2e/ | grep -v -e '^{' -e '^=== '

# The deploy gate: replays the runs of the namespace the TEMPORAL_* variables
# name (open ones and those closed in the last 7 days) against the workflow
# code in this tree, one line per run; fails when any no longer replays.
# REPLAY_SAVE=dir also writes each history there as JSON (a path seen in the
# cluster can join workflows/testdata/histories).
replay-live:
	$(GO) run ./cmd/identity-verification replay $(if $(REPLAY_SAVE),-save $(REPLAY_SAVE))

# The production topology of docker-compose.yml, natively (no Docker engine
# needed): Temporal Server 1.29.1 on the local PostgreSQL (built from
# tools/temporal on first use), the worker and the webhook as processes
# with the compose file's environment. `make test` runs it too when
# TEST_DATABASE_URL is set (CI does).
topology: tools
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable} \
	$(GO) test -count=1 -v -run 'TestProductionTopology' -timeout 30m ./e2e/ | grep -v -e '^{' -e '^=== '
	$(GO) test -count=1 ./deploy/

# Scale-out (e2e/scale_test.go), its long version: a two-node Temporal
# cluster on the local PostgreSQL, HAProxy in front of two webhook and two
# admin replicas and of the cluster, three workers; a larger storm-shaped
# load with every fault (worker SIGKILL, a webhook replica stopped, a rolling
# deploy after the replay gate, a Temporal node killed and brought back),
# the exact balance, then the throughput through the balancer with 1 and
# with 3 workers. `make test` runs the short version when TEST_DATABASE_URL
# is set (CI does). Needs HAProxy (apt-get install -y haproxy).
scale: tools
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable} SCALE_LONG=1 \
	$(GO) test -count=1 -v -run 'TestScaleOut' -timeout 40m ./e2e/ | grep -v -e '^{' -e '^=== ' -e ' events ok$$'

clean:
	rm -rf $(BIN)
