# The README's commands. Each target sets itself up from nothing: a virtual environment in .venv with
# the CPU build of torch and harken (editable). `make demo` installs what harken needs to run; `make test`
# adds the test and development tools (the `dev` extra).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HASH   := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STAMP  := $(VENV)/.installed-$(HASH)
DEV_STAMP := $(VENV)/.installed-dev-$(HASH)
DEMO   := runs/demo
ARMSPEECH := .cache/armspeech/model.tflite
KENLM  := $(BIN)/lmplz
BOOST_PACKAGES := cmake g++ libboost-program-options-dev libboost-system-dev libboost-thread-dev \
                  libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev

# The demo's model: small enough to train in a few minutes on two CPU cores, with the recipe for small
# corpora (docs/training.md).
DEMO_FLAGS := --n_hidden 256 --train_batch_size 16 --dev_batch_size 16 --test_batch_size 16 \
              --learning_rate 0.001 --preset small_data --epochs $(or $(DEMO_EPOCHS),22) \
              --checkpoint_dir $(DEMO)/checkpoints --show_progressbar $(if $(CI),false,true)

.PHONY: setup setup-dev demo test test-slow lint clean browser

setup: $(STAMP) $(KENLM)

setup-dev: setup $(DEV_STAMP)

$(STAMP):
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "harken needs Python 3.10 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[tensorboard]'  # the demo writes TensorBoard summaries
	rm -f $(VENV)/.installed-*
	touch $@

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# KenLM's lmplz and build_binary (for `harken lm build`) have no Debian package: compiled once from the
# kenlm sdist into the venv. Compiling needs boost headers: installed with apt when we are root.
$(KENLM): | $(STAMP)
	@if [ ! -f /usr/include/boost/program_options.hpp ] || ! command -v cmake >/dev/null; then \
	    if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq --no-install-recommends $(BOOST_PACKAGES) >/dev/null \
	        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $(BOOST_PACKAGES) >/dev/null; }; \
	    else echo "KenLM needs: sudo apt-get install $(BOOST_PACKAGES)"; exit 1; fi; fi
	$(BIN)/harken lm setup

# A real DeepSpeech-family model (ArmSpeech, Coqui STT, from its PyPI sdist): the tests check harken's
# features against the AudioSpectrogram+Mfcc ops inside it. Fetched once, cached outside git.
$(ARMSPEECH): | $(STAMP)
	mkdir -p .cache/armspeech
	$(BIN)/python -m pip download --quiet --no-deps --ignore-requires-python armspeech==0.1.4 -d .cache/armspeech
	tar -xzf .cache/armspeech/armspeech-0.1.4.tar.gz -C .cache/armspeech --strip-components 3 \
	    armspeech-0.1.4/src/model/model.tflite
	test -s $@

demo: setup
	$(BIN)/harken import synthetic $(DEMO)/corpus $(if $(CI),--noprogress,)
	$(BIN)/harken train $(DEMO_FLAGS) --train_files $(DEMO)/corpus/train.csv --dev_files $(DEMO)/corpus/dev.csv
	$(BIN)/harken evaluate --checkpoint_dir $(DEMO)/checkpoints --test_files $(DEMO)/corpus/test.csv \
	    --test_batch_size 16 --report_count 3 --test_output_file $(DEMO)/test-results.json \
	    --show_progressbar $(if $(CI),false,true)
	$(BIN)/harken lm build --text $(DEMO)/corpus/train.csv --order 3 --output $(DEMO)/lm.scorer
	$(BIN)/harken evaluate --checkpoint_dir $(DEMO)/checkpoints --test_files $(DEMO)/corpus/test.csv \
	    --test_batch_size 16 --report_count 3 --test_output_file $(DEMO)/test-results-scorer.json \
	    --scorer $(DEMO)/lm.scorer --show_progressbar $(if $(CI),false,true)
	@$(BIN)/python -c 'import json, sys; w = [json.load(open(f))[0]["wer"] for f in sys.argv[1:]]; \
	    print(f"Test WER: {w[0]:.2%} without a scorer, {w[1]:.2%} with the scorer built from the training text")' \
	    $(DEMO)/test-results.json $(DEMO)/test-results-scorer.json
	@echo "Transcribing $$(head -2 $(DEMO)/corpus/test.csv | tail -1 | cut -d, -f1) (reference: \"$$(head -2 $(DEMO)/corpus/test.csv | tail -1 | cut -d, -f3)\"):"
	$(BIN)/harken transcribe --checkpoint_dir $(DEMO)/checkpoints --scorer $(DEMO)/lm.scorer \
	    $(DEMO)/corpus/$$(head -2 $(DEMO)/corpus/test.csv | tail -1 | cut -d, -f1)
	@echo "Loss curves: $(DEMO)/checkpoints/loss.png; TensorBoard: $(BIN)/tensorboard --logdir $(DEMO)/checkpoints/summaries"

lint: setup-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

test: lint $(ARMSPEECH)
	$(BIN)/python -m pytest -q

test-slow: setup-dev $(ARMSPEECH) browser
	$(BIN)/python -m pytest -q -m slow

# The service's browser test drives Debian's chromium (Playwright, no browser download): installed here
# when running as root (CI); otherwise the test skips and names the apt command.
browser:
	@if ! command -v chromium >/dev/null; then \
	    if [ "$$(id -u)" = 0 ]; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	    else \
	        echo "chromium is missing: the browser test will skip (sudo apt-get install -y chromium)"; \
	    fi; \
	fi

clean:
	rm -rf $(VENV) .cache runs
