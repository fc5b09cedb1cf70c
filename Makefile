# The two commands a new machine needs: `make run` (the daemon) and `make test` (every test).
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help deps build run test bench clean typecheck

help:
	@echo "make run    install dependencies, build, start cvmd (data in ./var)"
	@echo "make test   install dependencies and run every test"
	@echo "make bench  run the benchmarks in bench/ and print their figures"

deps:
	@bash scripts/install-deps.sh

build: deps
	npm run build --silent

typecheck: deps
	npx tsc -p tsconfig.json --noEmit

run: build
	node dist/host/main.js

test: deps
	npx tsc -p tsconfig.json --noEmit
	npx vitest run

bench: deps
	npx vitest run --config bench/vitest.bench.config.ts

clean:
	rm -rf dist
