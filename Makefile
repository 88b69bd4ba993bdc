# Two entry points a new user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench soak clean help constraints lock

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# Every package comes from requirements.lock, pinned and checked against its recorded hashes
# (pip --require-hashes); the project itself is installed on top, without resolving anything.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "erpgw needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)  ## set up, then run a short peak-billing demo and print its report
	$(BIN)/erpgw demo

# Three workers, each test file on one worker (its fixtures and its order kept): the suite is
# mostly waiting on brokers and subprocesses, so this stays well inside its budget on 2 cores.
TEST_WORKERS ?= 3

test: $(STAMP)  ## set up, then run the whole test suite (TEST_WORKERS=1 for one process)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# ruff's S rules are the static security check (bandit's rule set); .ci/deps_audit.py runs
# pip-audit over requirements.lock (needs PyPI's JSON API; says NOT CHECKED when unreachable,
# and fails then too with ERPGW_DEPS_AUDIT=strict). .ci/secrets_scan.py runs detect-secrets over
# every tracked file against the reviewed baseline .secrets.baseline (S15).
lint: $(STAMP)  ## ruff (with its security rules), mypy, the import-layer contracts, pip-audit, detect-secrets
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python .ci/deps_audit.py
	$(BIN)/python .ci/secrets_scan.py

# The quick profile's four legs (max, 100/s, 1,000/s, 5,000/s; 1,000 invoices each, 200 at
# 100/s) through the gateway, each followed by the baselines on the same broker (raw hop,
# b1/b2, b1w/b2w/b2wl; only b1w and b2wl at 100/s; the FastStream peer and the FastAPI +
# FastStream peer at the maximum-load leg only), then a leg where 2,000
# usage records flood the usage lane (flow 4) alongside the invoices, and the RSS check (a
# fresh gateway for 1,000 and for 10,000 invoices). Legs are kept short so that the whole run
# stays under 3 minutes on an idle 2-core box (1 min 10 s to 1 min 20 s measured;
# docs/benchmarks.md).
# The optional extras (matplotlib for plots, py-spy for --flame, FastStream for the peer) are
# installed once; if that fails the bench still runs and reports what it skipped.
BENCH_OUT   ?= $(or $(TMPDIR),/tmp)/erpgw-bench
BENCH_STAMP := $(VENV)/.bench-extras

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,otel,bench,peer]' && touch $@ \
	  || echo "bench: optional extras not installed; plots and the peer will be skipped"

bench: $(BENCH_STAMP)  ## set up, then run the quick peak-billing bench and print its verdicts
	$(BIN)/erpgw bench peak-billing --profile quick --invoices 1000 --rss-check --usage 2000 \
	  --out $(BENCH_OUT)

# The kill soak (docs/benchmarks.md): 30 SIGKILLs of the gateway at random moments of a
# 10-minute bill run at 200 invoices/s, each followed by a restart; fails unless LOST = 0 and
# DUP = 0.
soak: $(STAMP)  ## kill soak: 30 random SIGKILLs of the gateway in a 10-min run (~10.5 min)
	$(BIN)/erpgw bench kill-soak --kills 30 --duration 600 --rate 200

constraints: $(STAMP)  ## re-pin constraints.txt to what the virtualenv has installed
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable; } \
	  > constraints.txt.new && mv constraints.txt.new constraints.txt

# After a dependency change: install it into .venv, `make constraints`, then `make lock`
# (a few minutes: it reads every pinned file's hash from the package index).
lock: $(STAMP)  ## re-pin requirements.lock (versions of constraints.txt, with hashes)
	$(BIN)/pip-compile --quiet --extra dev --extra otel --build-deps-for editable --generate-hashes \
	  --allow-unsafe --strip-extras -c constraints.txt --no-emit-index-url --no-emit-find-links \
	  -o requirements.lock pyproject.toml

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
