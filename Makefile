# Every target installs what it needs from the project's own files (pyproject.toml + uv.lock).
UV_VERSION := 0.9.30
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: setup demo test dev bench lint fmt

RUN := $(UV) run --frozen --no-sync

# Byte-compiled at install: otherwise each new process compiles the pyarrow, pandas and
# dagster sources it imports (about a second every time).
setup:
	@$(UV) --version >/dev/null 2>&1 || { echo "Installing uv $(UV_VERSION) with pip..."; \
		python3 -m pip install --quiet "uv==$(UV_VERSION)"; }
	@test -d .venv || echo "First run: installing the locked dependencies into .venv" \
		"(Dagster, DuckDB, pandas, ...; about a minute)..."
	@$(UV) sync --frozen --quiet --compile-bytecode

demo: setup
	@$(RUN) notifsync demo

test: setup
	@$(RUN) pytest -n auto --dist worksteal

bench: setup
	@$(RUN) python -m benchmarks.run

dev: setup
	@$(RUN) notifsync dev

lint: setup
	@$(RUN) ruff format --check .
	@$(RUN) ruff check .

fmt: setup
	@$(RUN) ruff format .
	@$(RUN) ruff check --fix .
