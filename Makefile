# p2pstore developer entry points. Every target creates or reuses .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Tahoe-LAFS for make bench-tahoe only, in a venv of its own (its pins and ours differ).
TAHOE_VENV ?= .venv-tahoe
TAHOE      ?= tahoe-lafs==1.20.0
# Parallel test workers; 2 cores on the project's machines.
WORKERS ?= 2

.PHONY: all install test lint typecheck pytest test-slow run bench bench-scale bench-backup bench-links bench-links-tahoe bench-mutable bench-tahoe clean browser nat-tools sftp-tools

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): pyproject.toml p2pstore/immutable/_gf256.c | $(BIN)/python
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -n $(WORKERS) -m "not slow"
	@echo "make test left out the slow tests (soaks, scale, NAT chaos, marked slow): run them with make test-slow"

## Headless Chromium for the web UI's browser tests: installed from the system's
## packages only if missing and we may (root, or sudo -n); never fails the build
## (without it those tests skip, saying why).
browser:
	@command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || { \
	  if ! command -v apt-get >/dev/null 2>&1; then SUDO=none; \
	  elif [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then echo "chromium missing (no apt-get/root): browser tests skip"; \
	  else export DEBIAN_FRONTEND=noninteractive; echo "installing chromium (browser tests)"; \
	    $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -qq >/dev/null 2>&1 && \
	      $$SUDO apt-get install -y -qq chromium >/dev/null 2>&1; } || \
	    echo "could not install chromium: browser tests skip"; fi; }

## nftables for the NAT routers of the network-namespace NAT tests
## (tests/nat_topology.py): installed the same way, if missing and we may; without
## it those tests skip, saying why.
nat-tools:
	@command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || { \
	  if ! command -v apt-get >/dev/null 2>&1; then SUDO=none; \
	  elif [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then echo "nft missing (no apt-get/root): NAT tests skip"; \
	  else export DEBIAN_FRONTEND=noninteractive; echo "installing nftables (NAT tests)"; \
	    $$SUDO apt-get install -y -qq nftables >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -qq >/dev/null 2>&1 && \
	      $$SUDO apt-get install -y -qq nftables >/dev/null 2>&1; } || \
	    echo "could not install nftables: NAT tests skip"; fi; }

## OpenSSH's sftp client and rclone for the SFTP server's end-to-end tests
## (tests/sftp/test_sftp_e2e.py): installed the same way, if missing and we may;
## without them those tests skip, saying why.
sftp-tools:
	@{ command -v sftp >/dev/null 2>&1 && command -v rclone >/dev/null 2>&1; } || { \
	  if ! command -v apt-get >/dev/null 2>&1; then SUDO=none; \
	  elif [ "$$(id -u)" = 0 ]; then SUDO=; \
	  elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" = none ]; then echo "sftp/rclone missing (no apt-get/root): SFTP tests skip"; \
	  else export DEBIAN_FRONTEND=noninteractive; echo "installing openssh-client and rclone (SFTP tests)"; \
	    $$SUDO apt-get install -y -qq openssh-client rclone >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -qq >/dev/null 2>&1 && \
	      $$SUDO apt-get install -y -qq openssh-client rclone >/dev/null 2>&1; } || \
	    echo "could not install openssh-client/rclone: SFTP tests skip"; fi; }

## The test command (README, .ci/run): lint, type checks, then the test suite.
test: lint typecheck browser nat-tools sftp-tools pytest

test-slow: $(STAMP)
	$(BIN)/pytest -m slow

## The main job: a working local grid plus the shell.
run: $(STAMP)
	$(BIN)/python -m p2pstore.demo

## Speed and memory measurements, printed as JSON lines.
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## 25, 50 and 100 real node processes: joining, lookups, put/get, memory, idle cost
## (long: about 15 minutes; docs/local-grid.md, "At scale").
bench-scale: $(STAMP)
	$(BIN)/python -m benchmarks.scale

## A home node behind a shaped 20/100 Mbit link uploading to 10 storage nodes (needs
## root, iproute2 and tc; docs/grid.md "Over a home link")
bench-links: $(STAMP)
	$(BIN)/python -m benchmarks.bench_links

## 2,000 files backed up, again unchanged, after 10 changes, then restored (docs/backup.md)
bench-backup: $(STAMP)
	$(BIN)/python -m benchmarks.bench_backup

## Mutable files and live directories beside the shared drive on a real 4-node grid:
## 1 MiB publish, read and change times; peak RSS of a 200 MiB new version against
## immutable random-key uploads (docs/mutable.md, "Measured"; also part of make bench)
bench-mutable: $(STAMP)
	$(BIN)/python -m benchmarks.bench_mutable

## p2pstore against Tahoe-LAFS 1.20 on loopback, each through its own CLI: 10 storage
## nodes, 3-of-10, 100 MiB put/get in interleaved rounds (docs/grid.md, "Against
## Tahoe-LAFS on loopback"). Installs Tahoe from PyPI into $(TAHOE_VENV) the first time,
## a download the test and bench targets must not need, so it is in neither.
$(TAHOE_VENV)/bin/tahoe:
	$(PYTHON) -m venv $(TAHOE_VENV)
	$(TAHOE_VENV)/bin/python -m pip install -q '$(TAHOE)'

bench-tahoe: $(STAMP) $(TAHOE_VENV)/bin/tahoe
	$(BIN)/python -m benchmarks.bench_tahoe --tahoe $(TAHOE_VENV)/bin/tahoe

## Tahoe-LAFS 1.20 over bench-links' shaped link and topology, for comparison: direct
## and helper uploads, downloads (needs root, iproute2 and tc; docs/grid.md,
## "Tahoe-LAFS over the same link"). Run it apart from bench-links, not beside it.
bench-links-tahoe: $(STAMP) $(TAHOE_VENV)/bin/tahoe
	$(BIN)/python -m benchmarks.bench_links_tahoe --tahoe $(TAHOE_VENV)/bin/tahoe

clean:
	rm -rf $(VENV) $(TAHOE_VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
