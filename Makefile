# Two entry points: `make demo` runs the main job, `make test` runs the suite.
# Both create .venv on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# Nothing leaves the machine: no Prefect telemetry.
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: demo test install clean up down

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/daqflow demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest

# Operations: a Prefect server on 127.0.0.1:4200 with one worker per pool.
up: $(BIN)/.installed
	$(BIN)/daqflow up

down: $(BIN)/.installed
	$(BIN)/daqflow down

clean:
	rm -rf $(VENV) .daqflow
