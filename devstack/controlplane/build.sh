#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager from the Go modules pinned in go.mod/go.sum into
# ${XDG_CACHE_HOME:-~/.cache}/ferry/kube/<kubernetes version>/. Nothing prebuilt is downloaded: the Go
# module proxy serves sources, checked against go.sum. A no-op when the binaries for this go.sum are there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
GO=${GO:-$(command -v go || true)}
[ -n "$GO" ] || GO=/usr/local/go/bin/go
version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$here/go.mod")
dest=${FERRY_KUBE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry/kube/$version}
stamp="$dest/.ferry-built"
sum=$(cat "$here/go.mod" "$here/go.sum" "$0" | cksum)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then exit 0; fi

if [ ! -x "$GO" ]; then
  echo "controlplane: Go is missing: install Go >= 1.25 (https://go.dev/dl) or set GO=/path/to/go; the Kubernetes control plane is built from source" >&2
  exit 1
fi
mkdir -p "$dest"
# NB: one build at a time per cache dir (two `make setup`s in one tree would race on the same files); the
# second waits and then finds the binaries built.
exec 9>"$dest/.lock"
if ! flock -n 9; then
  echo "controlplane: another build into $dest is running; waiting for it"
  flock 9
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then exit 0; fi
cd "$here"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--p=2}" GOTOOLCHAIN=local
minor=${version#v1.}; minor=${minor%%.*}
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
ldflags="$ldflags -X $pkg.buildDate=1970-01-01T00:00:00Z"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$version"

echo "controlplane: building Kubernetes $version (etcd, kube-apiserver, kube-controller-manager) into $dest"
echo "controlplane: from source with $("$GO" version | cut -d' ' -f3); ~12 min on 2 cores the first time, seconds after"
start=$SECONDS
"$GO" mod download
i=0
for target in go.etcd.io/etcd/server/v3:etcd k8s.io/kubernetes/cmd/kube-apiserver:kube-apiserver \
              k8s.io/kubernetes/cmd/kube-controller-manager:kube-controller-manager; do
  i=$((i + 1)); package=${target%%:*}; name=${target##*:}
  total=$("$GO" list -deps "$package" | wc -l)
  echo "controlplane: [$i/3] $name ($total packages)"
  # -v names each package as it is compiled (cached ones are not named): a progress line every 200.
  "$GO" build -v -trimpath -ldflags "$ldflags" -o "$dest/$name.tmp" "$package" 2>&1 | awk -v total="$total" -v name="$name" '
    /^#|:[0-9]+:|^go: / { print; next }
    { n++; if (n % 200 == 0) { printf "controlplane:       %s: %d/%d packages compiled\n", name, n, total; fflush() } }'
  mv "$dest/$name.tmp" "$dest/$name"
  echo "controlplane: [$i/3] $name done ($((SECONDS - start)) s so far)"
done
echo "$sum" > "$stamp"
"$dest/kube-apiserver" --version
echo "controlplane: done in $((SECONDS - start)) s"
