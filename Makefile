# robocall-shield: every target creates .venv itself when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint unit bench bench-deps system-deps soak clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { \
	  echo "python3 -m venv failed: installing python3-venv"; \
	  apt-get install -y python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

## run: start the proxy on the embedded defaults (SIP 127.0.0.1:5060 udp+tcp, admin :8080)
run: $(STAMP)
	$(VENV)/bin/robocall-shield serve $(if $(CONFIG),--config $(CONFIG))

## system-deps: Debian packages the tests need: SIPp (sip-tester), and headless
## Chromium with its WebDriver for the browser tests of the web pages, and
## Prometheus (with promtool) for the metrics, dashboard and alert tests,
## redis-server for the multi-node tests, PostgreSQL for the store tests
SYSTEM_DEPS := sipp:sip-tester chromium:chromium chromedriver:chromium-driver \
  prometheus:prometheus promtool:prometheus kamailio:kamailio \
  redis-server:redis-server pg_ctlcluster:postgresql
system-deps:
	@missing=""; for dep in $(SYSTEM_DEPS); do \
	  command -v $${dep%%:*} >/dev/null 2>&1 || missing="$$missing $${dep##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    $$SUDO apt-get install -y -qq $$missing >/dev/null; fi

## lint: ruff and mypy --strict on the packages
lint: $(STAMP)
	$(VENV)/bin/ruff check proxy blocklists tests loadtest
	$(VENV)/bin/mypy --strict proxy blocklists

## test: lint, then the whole suite, SIPp end-to-end tests included
## (pytest-timeout bounds each test; this bounds the run even if a hung
## test's teardown hangs too: SIGINT first, so pytest prints where it was)
test: $(STAMP) system-deps lint
	timeout --signal=INT --kill-after=60 3300 $(PY) -m pytest -q

## unit: the suite without the SIPp end-to-end tests
unit: $(STAMP)
	$(PY) -m pytest -q -m "not e2e"

## bench-deps: what the load comparison runs: SIPp (sip-tester) and Debian's
## kamailio (its htable, db_text, sl, rr and textops modules are in that package)
bench-deps:
	@$(MAKE) --no-print-directory system-deps \
	  SYSTEM_DEPS="sipp:sip-tester kamailio:kamailio"

## bench: microbenchmarks, then the side-by-side SIPp comparison of this proxy
## with Kamailio (Debian allocators and tlsf) and a bare forwarder
## (python -m loadtest; LOADTEST_ARGS=--quick for a shorter run)
bench: $(STAMP) bench-deps
	$(PY) loadtest/bench_core.py
	$(PY) loadtest/bench_reputation.py
	$(PY) -m loadtest.accuracy
	$(PY) loadtest/bench_blocklists.py
	$(PY) loadtest/bench_subscribers.py
	$(PY) loadtest/bench_stir.py
	$(PY) -m loadtest $(LOADTEST_ARGS)

## soak: SIPp at SOAK_RATE calls/s (200) for SOAK_SECONDS (600) through a real
## proxy while blocklists reload and subscribers are written; zero failed calls,
## flat RSS, no fd growth (python -m loadtest.soak; JSON in loadtest/results/)
SOAK_SECONDS ?= 600
SOAK_RATE    ?= 200
soak: $(STAMP) bench-deps
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_RATE=$(SOAK_RATE) $(PY) -m loadtest.soak

## fuzz: atheris (libFuzzer) on the parser and framer, then on the proxy core,
## FUZZ_SECONDS in all (default 600, half each); not part of make test. Installs
## atheris into the venv if missing; where it cannot be installed, runs the
## Hypothesis fuzz tests for that long instead. Corpus and any crashing input:
## .venv/fuzz/
.PHONY: fuzz
FUZZ_SECONDS ?= 600
fuzz: $(STAMP)
	@mkdir -p $(VENV)/fuzz
	@$(PY) -c 'import atheris' 2>/dev/null || $(PY) -m pip install --quiet atheris || true
	@half=$$(( $(FUZZ_SECONDS) / 2 )); [ $$half -gt 0 ] || half=1; \
	if $(PY) -c 'import atheris' 2>/dev/null; then \
	  for harness in parser core; do \
	    echo "atheris: fuzz_$$harness for $$half s (corpus $(VENV)/fuzz/$$harness)"; \
	    { $(PY) -m tests.fuzz.fuzz_$$harness $(VENV)/fuzz/$$harness -max_total_time=$$half \
	      -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	      -artifact_prefix=$(VENV)/fuzz/$$harness- 2>&1; echo $$? >$(VENV)/fuzz/rc; } \
	      | grep -v -e '^INFO: Instrumenting' -e '^"' -e '^#'; \
	    [ "$$(cat $(VENV)/fuzz/rc)" = 0 ] || { echo "fuzz_$$harness failed: see above"; exit 1; }; \
	  done; \
	else \
	  echo "make fuzz: atheris could not be installed here (it needs a wheel for this"; \
	  echo "Python, or clang with libFuzzer to build one); running the Hypothesis fuzz"; \
	  echo "tests for $(FUZZ_SECONDS) s instead (tests/test_fuzz.py, FUZZ_EXAMPLES=1000000)"; \
	  FUZZ_EXAMPLES=1000000 timeout $(FUZZ_SECONDS) $(PY) -m pytest -q -x tests/test_fuzz.py; \
	  rc=$$?; [ $$rc = 124 ] && echo "time is up: no failure found"; [ $$rc = 0 ] || [ $$rc = 124 ]; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
