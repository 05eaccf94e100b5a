# Two entry points that work on a fresh clone: `make demo` and `make test`.
# Each creates .venv and installs the project into it on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint clean standin

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/tfsbench demo

# The tests that do not measure time run on two workers; then the serial ones (timing, Docker)
# alone. Both parts always run; the target fails if either failed.
test: $(VENV)/.installed
	@$(BIN)/python -m pytest -n 2 -m 'not serial'; parallel=$$?; \
	$(BIN)/python -m pytest -m serial; serial=$$?; \
	echo "make test: parallel part exit $$parallel, serial part exit $$serial"; \
	[ $$parallel -eq 0 ] && [ $$serial -eq 0 ]

# The offline tensorflow/serving stand-in image (needs a Docker engine and a Debian host).
standin: $(VENV)/.installed
	$(BIN)/tfsbench docker build-standin

lint: $(VENV)/.installed
	$(BIN)/ruff check bench export reports locustfiles tests
	$(BIN)/ruff format --check bench export reports locustfiles tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) models runs .pytest_cache
