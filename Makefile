# Two commands for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test install clean

# constraints.txt pins the versions tested here (torch); pyproject.toml only declares ranges
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev,video,cluster,baselines]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m alignfuse.demo --out outputs/demo

test: $(VENV)/.installed
	$(PY) -m pytest

clean:
	rm -rf outputs/demo .pytest_cache
