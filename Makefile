# Everything a fresh machine needs is installed by these targets into ./.venv (override with VENV=...).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= codecswap-demo
BROWSER_TEST_OUT ?= browser-test-out
# Tests and the demo run on CPU with small settings; cap threads so 2-core machines are not oversubscribed.
export OMP_NUM_THREADS ?= 2
export MPLBACKEND ?= Agg

.PHONY: install demo test nbtest nbtest-slow pytest check readme check-readme results outputs bench docs browser-test packaging-check clean

$(BIN)/.installed: settings.ini setup.py
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { echo "python3 venv module missing: installing python3-venv"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(BIN)/.installed

## The main job: the codec switch on the embedded offline corpus (writes $(OUT)/)
demo: install
	$(BIN)/codecswap demo --out $(OUT)

## The whole test suite: notebook tests (nbdev_test), then pytest
test: install nbtest pytest

nbtest: install
	$(BIN)/nbdev_test --n_workers 2 --timing

## `#| slow` / `#| gpu` cells too (the demo, LibriTTS with LIBRITTS=<the LibriTTS folder>): nbdev_test --flags "slow gpu".
## In JupyterLab the tutorial's slow/gpu cells skip themselves unless CODECSWAP_SLOW=1 / CODECSWAP_GPU=1 (or a GPU is visible).
nbtest-slow: install
	CODECSWAP_SLOW=1 $(BIN)/nbdev_test --n_workers 1 --timing --flags slow

# tests/browser has its own target (it needs Chromium): `make browser-test`
pytest: install
	$(BIN)/python -m pytest -q tests --ignore=tests/browser

## CI checks: notebooks clean, module in sync with notebooks, README in sync with nbs/index.ipynb
check: install
	@state() { git status --porcelain --untracked-files=all -- nbs codecswap_nb README.md; git diff -- nbs codecswap_nb README.md | sha1sum; }; \
	before=$$(state); \
	$(BIN)/nbdev_export && $(BIN)/python tools/results.py >/dev/null && $(BIN)/nbdev_clean && $(BIN)/python tools/readme.py >/dev/null || exit 1; \
	if [ "$$before" != "$$(state)" ]; then git status --short -- nbs codecswap_nb README.md; \
	  echo "nbdev_export / tools/results.py / nbdev_clean / tools/readme.py changed the files above: commit the result (notebooks are the source)."; exit 1; fi; \
	echo "notebooks clean; module and README in sync with the notebooks"

readme: install
	$(BIN)/python tools/readme.py

## Re-run every notebook's fast cells and keep their outputs (what readers see); then commit the notebooks
outputs: install
	$(BIN)/python tools/execute_nbs.py --jobs 2 && $(BIN)/python tools/results.py && $(BIN)/nbdev_clean && $(BIN)/python tools/readme.py

## Tables and figures in the notebooks (and README) rendered from the committed result files in results/
results: install
	$(BIN)/python tools/results.py && $(BIN)/nbdev_clean && $(BIN)/python tools/readme.py

check-readme: install
	$(BIN)/python tools/readme.py --check

bench: install
	@for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

## HTML pages from the notebooks, with their outputs, in _docs/: nbdev_docs when `quarto` is on PATH (nbdev's
## site), else tools/docs.py (nbconvert, no Quarto: executes the notebooks like nbdev_test, slow/gpu cells not run)
docs: install
	@if command -v quarto >/dev/null; then echo "quarto found: nbdev_docs"; $(BIN)/nbdev_docs; \
	else echo "no quarto: tools/docs.py (nbconvert)"; $(BIN)/python tools/docs.py --jobs 2; fi

## The tutorial in a real JupyterLab in headless Chromium (installs chromium via apt when root, and playwright);
## screenshots and report.json in $(BROWSER_TEST_OUT)/
browser-test: install
	@tools/install_chromium.sh
	@$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install -q playwright
	@start=$$(date +%s); \
	CODECSWAP_BROWSER_TEST=1 BROWSER_TEST_OUT=$(BROWSER_TEST_OUT) $(BIN)/python -m pytest -q -s tests/browser; st=$$?; \
	echo "browser test: $$(( $$(date +%s) - start ))s; screenshots in $(BROWSER_TEST_OUT)/"; exit $$st

## Non-editable install into a fresh venv, pip check, imports and the CLI from outside the repo (minutes)
packaging-check: install
	CODECSWAP_PACKAGING_TEST=1 $(BIN)/python -m pytest -q tests/test_packaging.py

clean:
	rm -rf $(OUT) _proc _docs build dist *.egg-info $(BROWSER_TEST_OUT)
