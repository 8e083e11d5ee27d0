#!/usr/bin/env bash
# Builds the real control-plane binaries of the local test cluster from the Go
# module proxy, once per machine, cached outside the repo and keyed by version.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.14}"
VERSITYGW_VERSION="${VERSITYGW_VERSION:-v1.8.0}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"  # only for `build.sh kwok` (the scale benchmark)
KUEUE_VERSION="${KUEUE_VERSION:-v0.17.0}"  # only for `build.sh kueue` (localcluster/addons/kueue.py)
CACHE="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# The checksum database may be unreachable; the wrappers' go.sum files pin what we fetched.
export GOSUMDB=off GOPROXY="${GOPROXY:-$(go env GOPROXY)}"

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

command -v go >/dev/null || { echo "error: the Go toolchain is missing; install Go >= 1.25 and re-run 'make cluster-up'" >&2; exit 3; }

build_kubernetes() {
  local out="$CACHE/kubernetes-$K8S_VERSION/bin"
  if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/kube-scheduler" && -x "$out/kubectl" ]]; then
    log "kubernetes $K8S_VERSION: cached"; return
  fi
  local minor="${K8S_VERSION#v1.}"; local staging="v0.${minor}"
  local src="$CACHE/kubernetes-$K8S_VERSION/src"
  mkdir -p "$src" "$out"; cd "$src"
  log "kubernetes $K8S_VERSION: preparing wrapper module"
  local gomod
  gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  local godirective; godirective="$(awk '$1=="go"{print $2; exit}' "$gomod")"
  cat > go.mod <<GOMOD
module kubetune.local/kubernetes-build

go $godirective

godebug default=go${godirective%.*}

require k8s.io/kubernetes $K8S_VERSION
GOMOD
  # Each staging module replaced by its published tag, generated from the go.mod the proxy serves.
  grep -oE '^\s*k8s.io/[a-z0-9-]+ => ./staging/src/k8s.io/[a-z0-9-]+' "$gomod" | awk '{print $1}' | while read -r mod; do
    go mod edit "-replace=$mod=$mod@$staging"
  done
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "kubernetes $K8S_VERSION: go mod tidy (downloads modules)"
  go mod tidy
  local commit="0000000000000000000000000000000000000000" date; date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  local maj=1 min="${minor%%.*}" ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$maj -X $pkg.gitMinor=$min"
    ld+=" -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    [[ -x "$out/$cmd" ]] && continue
    log "kubernetes $K8S_VERSION: building $cmd"
    go build -trimpath -ldflags "$ld" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
    mv "$out/$cmd.tmp" "$out/$cmd"
  done
  log "kubernetes $K8S_VERSION: done"
}

build_etcd() {
  local out="$CACHE/etcd-$ETCD_VERSION/bin"
  if [[ -x "$out/etcd" ]]; then log "etcd $ETCD_VERSION: cached"; return; fi
  local src="$CACHE/etcd-$ETCD_VERSION/src"; mkdir -p "$src" "$out"; cd "$src"
  cat > go.mod <<GOMOD
module kubetune.local/etcd-build

go 1.25.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > tools.go
  log "etcd $ETCD_VERSION: go mod tidy"
  go mod tidy
  log "etcd $ETCD_VERSION: building"
  go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$out/etcd.tmp" "$out/etcd"
}

# One binary `go install`ed into $CACHE/NAME-VERSION/bin/NAME (the package's last element).
go_install() {  # NAME VERSION PACKAGE
  local name="$1" version="$2" pkg="$3"
  local out="$CACHE/$name-$version/bin"
  if [[ -x "$out/$name" ]]; then log "$name $version: cached"; return; fi
  mkdir -p "$out"
  log "$name $version: building"
  GOBIN="$out" go install -trimpath -ldflags "-s -w" "$pkg@$version"
}

build_versitygw() { go_install versitygw "$VERSITYGW_VERSION" github.com/versity/versitygw/cmd/versitygw; }
# kwok (fake nodes for the scale benchmark; not part of `all`): needs Go >= 1.26.
build_kwok() { go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok; }
# Kueue (the real controller manager, run as a host process; not part of `all`).
build_kueue() { go_install kueue "$KUEUE_VERSION" sigs.k8s.io/kueue/cmd/kueue; }

start=$(date +%s)
mkdir -p "$CACHE"
case "${1:-all}" in
  kubernetes) build_kubernetes ;;
  etcd) build_etcd ;;
  s3) build_versitygw ;;
  kwok) build_kwok ;;
  kueue) build_kueue ;;
  all) build_etcd; build_versitygw; build_kubernetes ;;
  *) echo "usage: $0 [all|kubernetes|etcd|s3|kwok|kueue]" >&2; exit 2 ;;
esac
log "finished in $(( $(date +%s) - start ))s; cache $CACHE uses $(du -sh "$CACHE" | cut -f1)"
