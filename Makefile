# keras-quant: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKENDS := $(VENV)/.backends
export TF_CPP_MIN_LOG_LEVEL ?= 3
export KERAS_BACKEND ?= tensorflow

.PHONY: demo test test-fast bench lint clean browser

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[cpu,test,tfmot,micro]"
	touch $(STAMP)

# JAX and PyTorch (CPU wheels) for the backend tests; `make test` only.
$(BACKENDS): $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[cpu,test,tfmot,micro,backends]"
	touch $(BACKENDS)

demo: $(STAMP)
	$(PY) examples/digits_demo.py --out out

# The report test renders report.html in a headless Chromium. As root
# (CI) Debian's package is installed when missing; anyone else is told
# what to install, or to run `make test-fast`, which leaves that test out.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium for the report test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "make test: the report test needs Chromium, and 'chromium' is" \
			"not on PATH. Install it (Debian/Ubuntu: sudo apt-get install" \
			"chromium), or run 'make test-fast', which skips the slow" \
			"tests, that one included." >&2; \
		exit 2; \
	fi

# The tests run in parallel, one worker per core up to 4 (pytest-xdist;
# each test file stays on one worker, so its module fixtures are built
# once). `make test TEST_WORKERS=1` runs them one after another.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); \
	[ "$$n" -gt 4 ] && n=4; echo $$n)
PYTEST := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

# The whole suite: about 8 minutes on 2 cores from a fresh clone, 5 to 7
# of them tests (see README).
test: $(STAMP) $(BACKENDS) browser
	$(PYTEST)

# Everything but the tests marked slow (tutorials, tfmot, browser, the
# longest searches): about 3 minutes 30 s.
test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check keras_quant tests examples benchmarks conftest.py
	$(PY) -m ruff format --check keras_quant tests examples benchmarks conftest.py

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf out build *.egg-info
