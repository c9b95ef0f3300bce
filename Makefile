# The two commands of the quick start: `make demo` and `make test`.
# Both create .venv with the default python3 when it is missing and install
# the project into it (editable, with the test extra).
PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
# Sharded code is exercised everywhere: 8 simulated CPU devices.
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=8

.PHONY: demo test bench clean

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip
	$(VENV_PYTHON) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(INSTALLED)
	$(VENV_PYTHON) -m train.loss_demo

test: $(INSTALLED)
	$(TEST_ENV) $(VENV_PYTHON) -m pytest

bench: $(INSTALLED)
	$(VENV_PYTHON) -m bench.losses

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
