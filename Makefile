# Two entry points for a fresh clone (see README.md): `make demo` and `make test`.
# Everything installs into .venv; torch is pinned so pip takes the CPU wheel, not a CUDA build.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0

.PHONY: install demo test bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(BIN)/activate
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/medtl scan sample_data -o out/manifest.csv --errors out/errors.csv

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_io.py

clean:
	rm -rf $(VENV) out .pytest_cache
