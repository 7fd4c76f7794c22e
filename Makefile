# The two set-up commands of the README. Each makes its own virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints-cpu.txt

.PHONY: demo test bench

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.core: $(VENV)/bin/python pyproject.toml constraints-cpu.txt
	$(PIP) -e .
	touch $@

$(VENV)/.test: $(VENV)/bin/python pyproject.toml constraints-cpu.txt
	$(PIP) -e ".[test]"
	touch $@ $(VENV)/.core

$(VENV)/.bench: $(VENV)/.test
	$(PIP) -e ".[test,bench]"
	touch $@

demo: $(VENV)/.core  ## play every registered game between built-in agents
	$(VENV)/bin/python -m spiral_envs.demo

test: $(VENV)/.test  ## run the whole test suite
	$(VENV)/bin/python -m pytest

bench: $(VENV)/.bench  ## benchmarks whose results go into the README
	$(VENV)/bin/python benchmarks/env_speed.py
