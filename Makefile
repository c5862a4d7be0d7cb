# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	mkdir -p var
	$(BIN)/kizuna serve --host 127.0.0.1 --port 1026 --store sqlite:///var/kizuna.db

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

format: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: $(STAMP)
	$(BIN)/python bench/throughput.py

clean:
	rm -rf $(VENV) var .pytest_cache

# A node, the simulator (small Duisburg, an hour a minute) and the risk service together.
demo: $(STAMP)
	mkdir -p var
	$(BIN)/kizuna serve --host 127.0.0.1 --port 1026 --store sqlite:///var/demo.db \
		--context-map tests/data/smart-data-models/context-map.json --log-level warning & \
	node=$$!; trap 'kill $$node $$risk 2>/dev/null' EXIT INT TERM; \
	until curl -sf http://127.0.0.1:1026/health >/dev/null; do sleep 0.2; done; \
	$(BIN)/kizuna risk --url http://127.0.0.1:1026 & risk=$$!; \
	$(BIN)/kizuna simulate duisburg --url http://127.0.0.1:1026 --scale small --speed 60
