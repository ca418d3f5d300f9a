# `make serve`: install everything, check it (`flashlive doctor`), then serve the default model on
#               127.0.0.1:8080 (+ TLS on 8443).
# `make test`:  install everything, then ruff, mypy and pytest.
VENV := .venv
BIN := $(VENV)/bin
INSTALL_INPUTS := pyproject.toml scripts/install.sh scripts/system-deps.sh scripts/constraints.txt \
	scripts/llama-cpu-variants.cmake

.PHONY: serve doctor test install install-dev lint bench bench-build bench-live bench-soak \
	bench-turns bench-vision

$(VENV)/.installed: $(INSTALL_INPUTS)
	scripts/install.sh runtime
	@touch $@

$(VENV)/.installed-dev: $(INSTALL_INPUTS) tests/js/package.json
	scripts/install.sh dev
	npm install --prefix tests/js --no-audit --no-fund --loglevel=error
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

serve: install
	$(BIN)/flashlive doctor
	$(BIN)/flashlive serve

doctor: install
	$(BIN)/flashlive doctor

lint: install-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

bench: install-dev
	$(BIN)/python -m benchmarks.rest

bench-build: install-dev
	$(BIN)/python -m benchmarks.build

bench-live: install-dev
	$(BIN)/python -m benchmarks.live

bench-soak: install-dev
	$(BIN)/python -m benchmarks.soak

bench-turns: install-dev
	$(BIN)/python -m benchmarks.turns

bench-vision: install-dev
	$(BIN)/python -m benchmarks.vision
