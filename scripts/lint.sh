#!/usr/bin/env bash
# The static checks, run by scripts/test.sh before the tests (so by .ci/run, in the same job).
# Every helper runs it before landing. Needs the dev tools of the `lint` extra (in `test`).
#   ruff          style, imports, likely bugs, 100-column lines      ([tool.ruff] in pyproject.toml)
#   lint-imports  the layers and forbidden imports                   (.importlinter; CONTRIBUTING.md)
#   mypy          clean on twin/ and operator/, strict on twin/core, twin/ingest, twin/service
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${LINT_BIN:-.venv/bin}
echo "lint: ruff" >&2
"$BIN/ruff" check --quiet twin operator tests bench scripts examples
echo "lint: import contracts" >&2
"$BIN/lint-imports" --no-cache >/dev/null || "$BIN/lint-imports" --no-cache
echo "lint: mypy" >&2
"$BIN/mypy" --no-error-summary
echo "lint: ok" >&2
