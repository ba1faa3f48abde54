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

# the main job on sample_data (`medtl demo`, medtl/demo.py): scan the folder, fine-tune the default
# recipe on the radiographs, evaluate and audit the run on its held-out patients, explain its test
# predictions with checked saliency maps, predict a folder of the radiographs plus a broken file and
# a photograph, and build the clinicians' report; one line per step, about two minutes on 2 CPU
# cores. Then `.venv/bin/medtl review out/report` serves the report for verdicts.
demo: install
	$(BIN)/medtl demo -o out

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_io.py

clean:
	rm -rf $(VENV) out .pytest_cache
