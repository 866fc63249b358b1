# multimodel.orchestration — one entry point for developers and CI. `make help` lists every
# target with the note after its `##`; every target has one.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV       := .venv
BIN        := $(VENV)/bin
PYTHON     ?= python3
VERSION    := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL    := build/multimodel-orchestration-$(VERSION).tar.gz
COLLECTIONS := build/collections
SANITY_DIR := build/sanity/ansible_collections/multimodel/orchestration
TIMINGS    := build/timings.txt
# `make test` builds the test images in the background (they wait on the mirror and dpkg,
# not the CPU) while setup, lint, sanity and units run; the exit status lands here.
IMAGES_RC  := build/host-images.rc
export PATH := $(abspath $(BIN)):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(abspath $(COLLECTIONS))
# Mitogen's strategy: one persistent interpreter per host instead of a new `docker exec` and
# Python per task (a warm site.yml re-run takes a third of the time). `make setup` links its
# plugins to $(VENV)/mitogen.
export ANSIBLE_STRATEGY_PLUGINS := $(abspath $(VENV)/mitogen/strategy)
export ANSIBLE_STRATEGY := mitogen_linear

# Molecule scenarios run by `make test` (each tests its role on its own platforms), longest
# first: MOLECULE_JOBS of them run side by side (tests/harness/run_molecule.py).
MOLECULE_SCENARIOS ?= app_tier multihost llama_cpp_servers_source backend redis llama_cpp_servers caddy docker
MOLECULE_JOBS ?= 3

# time a stage and record it: $(call timed,NAME,COMMAND)
timed = start=$$(date +%s); $(2); printf '%-28s %5ss\n' '$(1)' $$(( $$(date +%s) - start )) >>$(TIMINGS)

.PHONY: help setup host host-packages host-images lint docs sanity units collection ee browser ready-hosts molecule test up down bench clean

help: ## list the targets (this list)
	@echo 'usage: make TARGET   (make up: the quick start; make test: everything CI runs)'
	@awk -F ':.*## ' '/^[a-z][a-z-]*:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(firstword $(MAKEFILE_LIST))

$(BIN)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	ln -sfn "$$($(BIN)/python -c 'import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))')/plugins" $(VENV)/mitogen
	touch $@

setup: $(BIN)/.installed ## Python dev environment in .venv

host: ## Debian packages, dockerd, base and test images (needs root)
	bash tests/harness/prepare-host.sh

host-packages: ## the Debian packages and dockerd only: what lint, sanity and units need (needs root)
	bash tests/harness/prepare-host.sh packages

host-images: ## the base and test images only, after host-packages (needs root)
	bash tests/harness/prepare-host.sh images

# ansible-lint resolves the roles and modules by FQCN from the installed copy, hence `collection`.
lint: collection ## yamllint, ansible-lint, role checks, README variable tables, changelog, inventories, checkout run
	yamllint --strict .
	ansible-lint
	$(BIN)/python tests/lint/check_roles.py
	$(BIN)/python tests/lint/role_docs.py --check
	antsibull-changelog lint
	for inventory in inventories/*/; do \
	  ANSIBLE_INVENTORY_UNPARSED_FAILED=true ansible-inventory -i $$inventory --list --vault-password-file inventories/example/vault-password.example >/dev/null; \
	  ANSIBLE_INVENTORY_UNPARSED_FAILED=true ansible-playbook --syntax-check -i $$inventory site.yml --vault-password-file inventories/example/vault-password.example; \
	done
	bash tests/integration/checkout_run.sh
	$(MAKE) --no-print-directory ee

# ansible-builder writes the build context only (no registry here to pull the base image
# from); the checks: the collection's tarball is in it for the Containerfile to install, and
# the builder's introspection finds meta/execution-environment.yml's system packages.
ee: collection ## the execution environment's build context in build/ee (execution-environment.yml)
	rm -rf build/ee build/ee-collections && mkdir -p build/ee-collections && cp $(TARBALL) build/ee-collections/
	ansible-builder create -f execution-environment.yml -c build/ee --output-filename Containerfile
	test -f build/ee/_build/collections/$(notdir $(TARBALL))
	grep -q 'collection install --offline --no-deps .* /build/collections/\*.tar.gz' build/ee/Containerfile
	ansible-builder introspect --sanitize $(COLLECTIONS) | tee build/ee/introspect.yml
	grep -q 'openssh-client \[platform:dpkg\]  # from collection multimodel.orchestration' build/ee/introspect.yml

docs: setup ## write each role README's variable tables from its meta/argument_specs.yml
	$(BIN)/python tests/lint/role_docs.py --write

# ansible-test bootstraps pip in its sanity venvs from a script it downloads from a host
# that is not reachable here; give it ours (ensurepip + PyPI) under the name it looks for.
GET_PIP_VERSION = $(shell $(BIN)/python -c 'import ansible_test._internal.python_requirements as r, inspect, re; print(re.search(r"pip=.([0-9.]+)", inspect.getsource(r)).group(1))')

sanity: setup ## ansible-test sanity on a copy laid out as ansible_collections/multimodel/orchestration
	mkdir -p ~/.ansible/test/cache
	cp tests/harness/get_pip_offline.py ~/.ansible/test/cache/get_pip_$(subst .,_,$(GET_PIP_VERSION)).py
	rm -rf build/sanity && mkdir -p $(SANITY_DIR)
	git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t $(SANITY_DIR)
	cd $(SANITY_DIR) && git init -q && git add -A && \
	  env -u ANSIBLE_STRATEGY -u ANSIBLE_STRATEGY_PLUGINS ansible-test sanity --local --python 3.11 --requirements --color no

units: setup ## pytest unit tests (plugins, lint scripts, reference backend)
	$(BIN)/pytest tests/unit

collection: setup ## build the Galaxy tarball and install it where playbooks and Molecule look
	mkdir -p build && rm -f $(TARBALL)
	ansible-galaxy collection build --force --output-path build .
	ansible-galaxy collection install --offline --no-deps --force -p $(COLLECTIONS) $(TARBALL)
	ansible-playbook tests/integration/installed_collection.yml

# playwright-core, pinned with its sha512 in the lockfile, for the app_tier browser test; it
# drives Debian's chromium (host-packages), so no browser is downloaded.
browser: build/browser/node_modules/playwright-core/package.json ## the browser test's playwright-core (npm ci into build/browser)

build/browser/node_modules/playwright-core/package.json: tests/browser/package.json tests/browser/package-lock.json
	mkdir -p build/browser && cp tests/browser/package.json tests/browser/package-lock.json build/browser/
	npm ci --prefix build/browser --no-audit --no-fund --loglevel=error
	touch $@

ready-hosts: collection ## ready-host images (Docker Engine installed by the docker role) the app scenarios start from
	bash tests/harness/build-ready-hosts.sh

molecule: ready-hosts browser ## every scenario in MOLECULE_SCENARIOS, MOLECULE_JOBS side by side; step times in build/timings.txt
	mkdir -p build && touch $(TIMINGS)
	$(BIN)/python tests/harness/run_molecule.py --jobs $(MOLECULE_JOBS) --timings $(TIMINGS) --logs build/molecule $(MOLECULE_SCENARIOS)

test: ## lint, sanity, units, collection build+install, Molecule; prints the time of each stage
	mkdir -p build && : >$(TIMINGS) && rm -f $(IMAGES_RC)
	@$(call timed,host packages,$(MAKE) --no-print-directory host-packages)
	@(set +e; start=$$(date +%s); $(MAKE) --no-print-directory host-images >build/host-images.log 2>&1; rc=$$?; \
	  printf '%-28s %5ss\n' 'host images (background)' $$(( $$(date +%s) - start )) >>$(TIMINGS); echo $$rc >$(IMAGES_RC)) &
	@$(call timed,setup,$(MAKE) --no-print-directory setup)
	@$(call timed,lint,$(MAKE) --no-print-directory lint)
	@$(call timed,sanity,$(MAKE) --no-print-directory sanity)
	@$(call timed,units,$(MAKE) --no-print-directory units)
	@$(call timed,wait for host images,while [ ! -s $(IMAGES_RC) ]; do sleep 2; done; \
	  [ "$$(cat $(IMAGES_RC))" = 0 ] || { tail -n 60 build/host-images.log; echo 'building the test images failed: see build/host-images.log'; exit 1; })
	@$(call timed,ready hosts,$(MAKE) --no-print-directory ready-hosts)
	@$(call timed,molecule (all),$(MAKE) --no-print-directory molecule)
	@echo '--- stage times ---'; cat $(TIMINGS)

up: setup host collection ## quick start: the stack on a local sandbox host
	bash tests/harness/build-test-models.sh $(BIN)/python
	ansible-playbook -i inventories/local tests/harness/sandbox.yml
	ansible-playbook -i inventories/local site.yml
	@bash tests/harness/quickstart-summary.sh mmo-sandbox

down: ## remove the quick start's sandbox host
	ansible-playbook -i inventories/local tests/harness/sandbox.yml -e sandbox_state=absent

bench: collection ## benchmark tables (bench/), on real services
	bash bench/run-llama-benches.sh
	bash bench/run-app-benches.sh
	bash bench/run-fault-benches.sh
	bash bench/run-api-benches.sh
	bash bench/run-site-rerun.sh
	$(BIN)/python bench/bench_snapshot.py

clean: ## remove build/ (tarball, installed collection, sanity copy, logs, timings)
	rm -rf build
