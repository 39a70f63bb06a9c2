# keras-quant: `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 3
export KERAS_BACKEND ?= tensorflow

.PHONY: demo test bench lint clean browser

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[cpu,test,tfmot]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/digits_demo.py --out out

# The report tests render report.html in Debian's headless Chromium.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "Installing Debian's chromium for the report tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) browser
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check keras_quant tests examples benchmarks conftest.py
	$(PY) -m ruff format --check keras_quant tests examples benchmarks conftest.py

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf out build *.egg-info
