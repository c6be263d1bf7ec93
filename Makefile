# Every target installs what it needs from the project's own files (pyproject.toml + uv.lock).
UV_VERSION := 0.9.30
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: setup demo test dev bench lint fmt

setup:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	@$(UV) sync --frozen --quiet

demo: setup
	@$(UV) run notifsync demo

test: setup
	@$(UV) run pytest

bench: setup
	@$(UV) run python -m benchmarks.run

dev: setup
	@$(UV) run notifsync dev

lint: setup
	@$(UV) run ruff format --check .
	@$(UV) run ruff check .

fmt: setup
	@$(UV) run ruff format .
	@$(UV) run ruff check --fix .
