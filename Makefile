# The two commands of the quick start: `make demo` and `make test`.
# Both create .venv with the default python3 when it is missing and install
# the project into it (editable, with the test extra).
PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench clean

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip
	$(VENV_PYTHON) -m pip install --quiet -e '.[test]'
	touch $@

demo: $(INSTALLED)
	$(VENV_PYTHON) -m train.demo

test: $(INSTALLED)
	$(VENV_PYTHON) -m pytest  # tests/conftest.py sets 8 simulated CPU devices

bench: $(INSTALLED)
	$(VENV_PYTHON) -m bench.losses

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
