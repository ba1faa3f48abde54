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

# the main job on sample_data: scan the folder, fine-tune on the radiographs, evaluate and audit
# the run on its own held-out patients, explain its test predictions with checked saliency maps,
# predict the whole sample folder as a weekly batch would, with a Grad-CAM map per image, and
# build the clinicians' report of it (about three minutes on 2 CPU cores); then
# `.venv/bin/medtl review out/report` serves it for verdicts
demo: install
	$(BIN)/medtl scan sample_data -o out/manifest.csv --errors out/errors.csv
	$(BIN)/medtl train configs/cxr-2d.yaml -o out/run-cxr --restart
	$(BIN)/medtl evaluate out/run-cxr sample_data/cxr.csv --split test --groups sex,site --min-group 5 -o out/eval-cxr --overwrite
	$(BIN)/medtl explain out/run-cxr sample_data/cxr.csv --split test --method gradcam,gradcam++,ig --sanity --sanity-samples 4 -o out/explain-cxr --overwrite
	$(BIN)/medtl predict out/run-cxr sample_data -o out/predict --saliency gradcam --overwrite
	$(BIN)/medtl report out/run-cxr out/predict -o out/report --evaluation out/eval-cxr --explanation out/explain-cxr --overwrite

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/bench_io.py

clean:
	rm -rf $(VENV) out .pytest_cache
