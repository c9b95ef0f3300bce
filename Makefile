# The two commands of the quick start: `make demo` and `make test`.
# Both create .venv with the default python3 when it is missing and install
# the project into it (editable, with the test extra).
PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

# Test workers: one per core, at most 4 (each holds 8 simulated devices
# and compiles on one core; 2 workers took the suite from 803 s to 515 s
# on 2 cores). TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); \
                  if [ $$n -gt 4 ]; then n=4; fi; echo $$n)

.PHONY: demo test bench clean

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip
	$(VENV_PYTHON) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(INSTALLED)
	$(VENV_PYTHON) -m train.demo

test: $(INSTALLED)
	$(VENV_PYTHON) -m pytest -n $(TEST_WORKERS)  # tests/conftest.py sets 8 simulated CPU devices

bench: $(INSTALLED)
	$(VENV_PYTHON) -m bench.losses

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
