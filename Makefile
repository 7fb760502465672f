.PHONY: install check format test bench

install:
	./scripts/install.sh --test

check:
	.venv/bin/ruff check src tests bench
	.venv/bin/ruff format --check src tests bench
	.venv/bin/mypy

format:
	.venv/bin/ruff check --fix src tests bench
	.venv/bin/ruff format src tests bench

test:
	.venv/bin/python -m pytest

bench:
	.venv/bin/python bench/engines.py
