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
## Prometheus (with promtool) for the metrics, dashboard and alert tests
SYSTEM_DEPS := sipp:sip-tester chromium:chromium chromedriver:chromium-driver \
  prometheus:prometheus promtool:prometheus kamailio:kamailio
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
test: $(STAMP) system-deps lint
	$(PY) -m pytest -q

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

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
