# The two commands a new machine needs: `make run` (the daemon) and `make test` (every test).
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help deps build image run test test-fast bench clean typecheck structure install verifier

help:
	@echo "make run        install dependencies, build, start cvmd (data in ./var)"
	@echo "make test       install dependencies and run every test (about 45 min: boots VMs under emulation)"
	@echo "make test-fast  every test but the VM E2E tests (test/e2e/), without building the image (about 10 min)"
	@echo "make bench      run the benchmarks in bench/ and print their figures"
	@echo "make image      build (or reuse from cache) the measured guest image into images/out/current"
	@echo "make verifier   pack cvm-verify for a tenant's machine: dist/cvm-verify-<version>.tgz (no dependencies)"

deps:
	@bash scripts/install-deps.sh

build: deps
	npm run build --silent

# tsconfig.json emits only the shipped sources; tsconfig.check.json also covers tests, benches and
# test doubles, so a FakeDriver that drifts from Driver fails here instead of at runtime.
typecheck: deps
	npx tsc -p tsconfig.check.json

# The image carries the compiled agent, so it follows `build`; its recipe caches the slow parts.
# IMAGE_ARGS passes build flags (--firmware, --qemu-version, --memory-mib) that decide the expected
# measurements; the build prints the manifest's sha256 last.
IMAGE_ARGS ?=
image: build
	bash images/build.sh --require-agent $(IMAGE_ARGS)

# One pre-booted guest by default, so the first create is a warm claim (override: CVM_WARM_POOL_SIZE=0 make run).
# CVM_DRIVER=none boots no guest, so it skips the image, the slow part of a first run. (Only the
# environment is seen here: a CVM_DRIVER set in CVM_CONFIG_FILE still builds the image.)
run: $(if $(filter none,$(CVM_DRIVER)),build,image)
	CVM_WARM_POOL_SIZE=$${CVM_WARM_POOL_SIZE:-1} node dist/host/main.js

# The rooms and their rules (.dependency-cruiser.cjs, docs/architecture.md) and no copy-pasted
# code outside tests and benches (.jscpd.json: any clone of 5+ lines and 50+ tokens fails).
structure: deps
	npx depcruise host guest shared images test bench --config .dependency-cruiser.cjs
	npx jscpd

# The JSON report lets scripts/require-all-ran.mjs count what did not run: under
# CVM_REQUIRE_SYSTEM_TESTS=1 (CI) any skipped test fails the run.
VITEST_REPORT = --reporter=default --reporter=json --outputFile.json=var/test-report.json

test: image structure
	npx tsc -p tsconfig.check.json
	npx vitest run $(VITEST_REPORT)
	node scripts/require-all-ran.mjs var/test-report.json

# The loop while working: no image build and no VM E2E tests. Tests needing an image (the boot
# check, the kernel checks) use one already built, or skip saying so.
test-fast: build structure
	npx tsc -p tsconfig.check.json
	npx vitest run --exclude 'test/e2e/**' $(VITEST_REPORT)
	node scripts/require-all-ran.mjs var/test-report.json

# The tenant's verifier as one dependency-free npm package. It needs only node_modules (a tenant's
# `npm ci --ignore-scripts` is enough), so it does not go through `deps`, which installs host packages as root.
verifier:
	node scripts/pack-verifier.mjs

bench: deps
	npx vitest run --config bench/vitest.bench.config.ts

clean:
	rm -rf dist

# `make install` (as root): the built daemon under $(PREFIX)/lib/cvm with its production
# node_modules, cvmd/cvmctl in $(PREFIX)/bin, the systemd unit, and a default configuration
# (never overwritten). Then: systemctl daemon-reload && systemctl enable --now cvmd
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
UNITDIR ?= /etc/systemd/system
APPDIR = $(PREFIX)/lib/cvm
SUBST = sed -e 's|/usr/local|$(PREFIX)|g' -e 's|/etc/cvm|$(SYSCONFDIR)/cvm|g'

install: build
	install -d -m 0755 $(DESTDIR)$(APPDIR) $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR)
	install -d -m 0750 $(DESTDIR)$(SYSCONFDIR)/cvm
	rm -rf $(DESTDIR)$(APPDIR)/dist $(DESTDIR)$(APPDIR)/node_modules
	cp -a dist node_modules package.json package-lock.json README.md $(DESTDIR)$(APPDIR)/
	cd $(DESTDIR)$(APPDIR) && npm prune --omit=dev --no-audit --no-fund --silent
	chmod 0755 $(DESTDIR)$(APPDIR)/dist/host/main.js $(DESTDIR)$(APPDIR)/dist/host/cli/main.js
	ln -sfn $(APPDIR)/dist/host/main.js $(DESTDIR)$(PREFIX)/bin/cvmd
	$(SUBST) systemd/cvmctl.sh > $(DESTDIR)$(PREFIX)/bin/cvmctl && chmod 0755 $(DESTDIR)$(PREFIX)/bin/cvmctl
	$(SUBST) systemd/cvmd.service > $(DESTDIR)$(UNITDIR)/cvmd.service && chmod 0644 $(DESTDIR)$(UNITDIR)/cvmd.service
	test -e $(DESTDIR)$(SYSCONFDIR)/cvm/cvmd.json || $(SUBST) systemd/cvmd.json > $(DESTDIR)$(SYSCONFDIR)/cvm/cvmd.json
	chmod 0640 $(DESTDIR)$(SYSCONFDIR)/cvm/cvmd.json
	@echo "installed cvmd in $(DESTDIR)$(APPDIR); next: systemctl daemon-reload && systemctl enable --now cvmd"
