# Two commands do everything on a fresh machine: `make demo` and `make test`.
PY ?= python3
PY310 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10) python3.10)
VENV := .venv
VENV_FORGE := .venv-forge
VENV_310 := .venv-py310
PIP_QUIET := -q --disable-pip-version-check
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup setup-forge setup-py310 chromium test test-a1111 test-forge test-py310 demo bench clean

setup: $(VENV)/.done
setup-forge: $(VENV_FORGE)/.done
setup-py310: $(VENV_310)/.done

$(VENV)/.done: requirements.txt requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_QUIET) -r requirements.txt -r requirements-dev.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(VENV)/bin/pip check
	$(VENV)/bin/python -m lora_trainer.models.clip_vocab --fetch
	touch $@

$(VENV_FORGE)/.done: requirements-forge.txt requirements-dev.txt
	$(PY) -m venv $(VENV_FORGE)
	$(VENV_FORGE)/bin/pip install $(PIP_QUIET) -r requirements-forge.txt -r requirements-dev.txt 2>&1 | grep -v "^WARNING: Location" || true
	$(VENV_FORGE)/bin/pip check
	$(VENV_FORGE)/bin/python -m lora_trainer.models.clip_vocab --fetch
	touch $@

$(VENV_310)/.done: requirements-dev.txt
	$(PY310) -m venv $(VENV_310)
	$(VENV_310)/bin/pip install $(PIP_QUIET) pytest==8.3.3 pytest-timeout==2.3.1 "tomli>=2.0" Pillow==9.5.0 numpy==1.26.2 2>&1 | grep -v "^WARNING: Location" || true
	touch $@

# Headless Chromium for the browser tests (Debian package; Playwright drives it, never downloads one).
chromium:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null)

# Whole suite on A1111's pins; then Forge's pins for what needs them; then Python 3.10 torch-free checks.
test: test-a1111 test-forge test-py310

test-a1111: setup chromium
	$(VENV)/bin/python -m pytest tests -q -m "not forge_only"

test-forge: setup-forge chromium
	$(VENV_FORGE)/bin/python -m pytest tests -q -m "forge_only or both_profiles"

test-py310: setup-py310
	$(VENV_310)/bin/python -m compileall -q lora_trainer $(wildcard scripts install.py bench)
	$(VENV_310)/bin/python -m pytest tests -q

demo: setup
	$(VENV)/bin/python -m lora_trainer demo

bench: setup
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) $(VENV_FORGE) $(VENV_310) build artifacts demo
