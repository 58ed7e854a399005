#!/usr/bin/env bash
# Builds Flux's source-controller and kustomize-controller from the Go modules pinned in go.mod/go.sum (generated
# by gen-go-mod.sh) into ${XDG_CACHE_HOME:-~/.cache}/ferry/flux/<version>/. Nothing prebuilt is downloaded: the Go
# module proxy serves sources, checked against go.sum. A no-op when the binaries for this go.sum are there.
# Opt-in (`make flux`): `make setup` does not build it; the Flux tests and bench/flux_vs_ferry.py do.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
GO=${GO:-$(command -v go || true)}
[ -n "$GO" ] || GO=/usr/local/go/bin/go
version=$(awk '$1 == "github.com/fluxcd/source-controller" && $2 ~ /^v/ { print $2; exit }' "$here/go.mod")
[ -n "$version" ] || { echo "flux: no source-controller requirement in $here/go.mod; run gen-go-mod.sh" >&2; exit 1; }
dest=${FERRY_FLUX_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/flux/$version}
stamp="$dest/.ferry-built"
sum=$(cat "$here/go.mod" "$here/go.sum" "$0" | cksum)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then exit 0; fi

if [ ! -x "$GO" ]; then
  echo "flux: Go is missing: install Go >= 1.26 (https://go.dev/dl) or set GO=/path/to/go; the Flux controllers are built from source" >&2
  exit 1
fi
mkdir -p "$dest"
# NB: one build at a time per cache dir; the second waits and then finds the binaries built.
exec 9>"$dest/.lock"
if ! flock -n 9; then
  echo "flux: another build into $dest is running; waiting for it"
  flock 9
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then exit 0; fi
cd "$here"
# NB: -mod=mod is not wanted: go.sum is complete for the two binaries, so a refused test-only module
# (helmtestserver) is never fetched.
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--p=2}" GOTOOLCHAIN=local

echo "flux: building source-controller and kustomize-controller $version into $dest"
echo "flux: from source with $("$GO" version | cut -d' ' -f3); ~10 min on 2 cores the first time (less with the control plane's build cache), seconds after"
start=$SECONDS
i=0
for name in source-controller kustomize-controller; do
  i=$((i + 1)); package=github.com/fluxcd/$name
  total=$("$GO" list -deps "$package" | wc -l)
  echo "flux: [$i/2] $name ($total packages)"
  # -v names each package as it is compiled (cached ones are not named): a progress line every 200.
  if ! nice -n 10 "$GO" build -v -trimpath -ldflags "-s -w" -o "$dest/$name.tmp" "$package" 2>&1 | awk -v total="$total" -v name="$name" '
    /^#|:[0-9]+:|^go: / { print; next }
    { n++; if (n % 200 == 0) { printf "flux:       %s: %d/%d packages compiled\n", name, n, total; fflush() } }'; then
    echo "flux: building $name failed" >&2; exit 1
  fi
  mv "$dest/$name.tmp" "$dest/$name"
  echo "flux: [$i/2] $name done ($((SECONDS - start)) s so far)"
done
echo "$sum" > "$stamp"
echo "flux: done in $((SECONDS - start)) s"
