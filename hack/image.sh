#!/usr/bin/env bash
# Builds the kubetune image from the root Dockerfile on a machine that has no
# container daemon and reaches no image registry: buildah (vfs storage, chroot
# isolation, as root) builds it, and the Dockerfile's Debian base is made here
# from Debian's packages with debootstrap. Both are cached outside the repo.
#
#   hack/image.sh [build]      the base if missing, then the image (skipped when its inputs are unchanged)
#   hack/image.sh base         only the base image
#   hack/image.sh name         print the image's name
#   hack/image.sh buildah ...  buildah on the project's image storage (images, run, push ...)
#   hack/image.sh prune        remove every image of that storage (the next build starts cold)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${KUBETUNE_CACHE:-$HOME/.cache/kubetune}"
# Images live in their own storage under the cache, so they survive `git clean`
# and never mix with the machine's other containers.
STORAGE="$CACHE/buildah"
# Bump when base() makes a different tree: a cached base with another recipe is rebuilt.
BASE_RECIPE=1

# The one source of the version (pyproject.toml reads it too).
VERSION="$(sed -n 's/^VERSION = "\(.*\)"$/\1/p' "$REPO/worker/kubetune/sdk/version.py")"
[ -n "$VERSION" ] || { echo "no VERSION in worker/kubetune/sdk/version.py" >&2; exit 1; }
IMAGE="${KUBETUNE_IMAGE:-localhost/kubetune:$VERSION}"
# The base is made under exactly the name the Dockerfile's first FROM uses,
# e.g. docker.io/library/debian:bookworm-slim, so the Dockerfile stays standard.
BASE_IMAGE="$(awk 'toupper($1)=="FROM" {print $2; exit}' "$REPO/Dockerfile")"
SUITE="${BASE_IMAGE##*:}"
SUITE="${SUITE%-slim}"

log() { printf '[image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 3; }

bah() {
  buildah --root "$STORAGE/storage" --runroot "$STORAGE/run" --storage-driver vfs "$@"
}

require_root() {
  [[ $EUID -eq 0 ]] || die "building the image needs root (debootstrap, and buildah with the" \
    "vfs driver and chroot isolation); run 'sudo make image'"
}

# CI starts from a bare Debian machine: install the two tools from Debian's packages when missing.
ensure_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  ((${#missing[@]} == 0)) && return 0
  require_root
  command -v apt-get >/dev/null ||
    die "${missing[*]} missing and no apt-get here: install ${missing[*]} (packages of those names)"
  log "installing ${missing[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  # runc/crun and fuse-overlayfs are only recommended: chroot isolation and vfs need neither.
  if ! apt-get install -y --no-install-recommends "${missing[@]}" >&2; then
    apt-get update >&2
    apt-get install -y --no-install-recommends "${missing[@]}" >&2
  fi
}

# The mirror this machine's apt uses for SUITE (e.g. bookworm, bookworm-security),
# so the base reaches Debian the way the host does (no mirror is written here);
# DEBIAN_MIRROR / DEBIAN_SECURITY_MIRROR override it.
host_mirror() {
  # shellcheck disable=SC2016  # $(REPO_URI) is apt's own field syntax, not the shell's
  apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
    awk -v s="$1" '$2==s {print $1; exit}'
}

label() {
  bah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

base() {
  [[ -n "$BASE_IMAGE" && "$SUITE" != "$BASE_IMAGE" ]] ||
    die "cannot read a Debian suite from the Dockerfile's first FROM ('$BASE_IMAGE');" \
      "expected e.g. docker.io/library/debian:bookworm-slim"
  local key="debootstrap-minbase-$SUITE-r$BASE_RECIPE"
  if [[ "$(label "$BASE_IMAGE" io.kubetune.base)" == "$key" ]]; then
    log "base $BASE_IMAGE: cached ($key)"
    return
  fi
  require_root
  # indextargets lists only what `apt-get update` fetched (none on a fresh Debian image).
  if [[ -z "${DEBIAN_MIRROR:-}" && -z "$(host_mirror "$SUITE")" ]]; then apt-get update >&2; fi
  local mirror="${DEBIAN_MIRROR:-$(host_mirror "$SUITE")}"
  local security="${DEBIAN_SECURITY_MIRROR:-$(host_mirror "$SUITE-security")}"
  [[ -n "$mirror" ]] ||
    die "this machine's apt has no source for '$SUITE'; set DEBIAN_MIRROR to a Debian mirror URL"
  log "base $BASE_IMAGE: debootstrap --variant=minbase $SUITE from $mirror"
  local root
  BASE_CTR="$(bah from --name "kubetune-base-$$" scratch)"
  trap 'bah rm "$BASE_CTR" >/dev/null 2>&1 || true' EXIT
  root="$(bah mount "$BASE_CTR")"
  local logfile="$STORAGE/debootstrap.log"
  debootstrap --variant=minbase "$SUITE" "$root" "$mirror" >"$logfile" 2>&1 ||
    die "debootstrap failed; its log: $logfile (and debootstrap/debootstrap.log inside the tree)"
  slim "$root" "$mirror" "$security"
  bah umount "$BASE_CTR" >/dev/null
  bah config --cmd bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --label "io.kubetune.base=$key" "$BASE_CTR"
  bah commit --rm --quiet "$BASE_CTR" "$BASE_IMAGE" >/dev/null
  trap - EXIT
  log "base $BASE_IMAGE: done ($(bah images --format '{{.Size}}' "$BASE_IMAGE"))"
}

source_entry() {
  printf 'Types: deb\nURIs: %s\nSuites: %s\nComponents: main\n' "$1" "$2"
  printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
}

# Make the debootstrap tree look like Debian's slim images: apt sources in
# deb822 form, no package caches or lists, and dpkg told to skip docs, man
# pages and translations in later installs (copyright files stay).
slim() {
  local root="$1" mirror="$2" security="$3"
  rm -f "$root/etc/apt/sources.list"
  {
    source_entry "$mirror" "$SUITE $SUITE-updates"
    [[ -z "$security" ]] || { echo; source_entry "$security" "$SUITE-security"; }
  } >"$root/etc/apt/sources.list.d/debian.sources"
  cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
EOF
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  printf 'Acquire::Languages "none";\n' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{man,info,groff,lintian,locale}/* "$root"/var/cache/apt/* \
    "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root/debootstrap"
  # The build and the runtime supply these.
  : >"$root/etc/resolv.conf"
  : >"$root/etc/hostname"
  : >"$root/etc/machine-id"
}

# The files the Dockerfile's COPY lines take from the context (less what
# .dockerignore drops) and this script, hashed with the base image's ID: an
# unchanged hash means the image is already built from exactly these inputs.
inputs_hash() {
  local srcs
  mapfile -t srcs < <(awk 'toupper($1)=="COPY" && $2 !~ /^--from/ {
    for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' "$REPO/Dockerfile")
  (
    cd "$REPO"
    bah images --noheading --no-trunc --format '{{.ID}}' "$BASE_IMAGE"
    find Dockerfile .dockerignore hack/image.sh "${srcs[@]%/}" -type f \
      ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 |
      sort -z | xargs -0 sha256sum
  ) | sha256sum | cut -c1-16
}

# pip inside the build reaches the index the way this machine's pip does: its
# CA bundle and a pip.conf with its index settings are put in a private folder
# mounted read-only at /mnt during the build (never copied into a layer, nor
# into the build's history), PIP_CERT / PIP_CONFIG_FILE point at them; proxies
# pass as build args. /mnt is empty in every Debian image, so the mount leaves
# no mount point behind in a layer.
build_settings() {
  local dir="$1" ca="" var value key
  printf '[global]\n' >"$dir/pip.conf"
  for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_TRUSTED_HOST; do
    key="${var#PIP_}"; key="${key,,}"; key="${key//_/-}"
    value="${!var:-}"
    if [[ -z "$value" ]] && command -v pip3 >/dev/null; then
      value="$(pip3 config get "global.$key" 2>/dev/null || true)"
    fi
    [[ -n "$value" ]] && printf '%s = %s\n' "$key" "$value" >>"$dir/pip.conf"
  done
  printf '%s\0' --volume "$dir:/mnt:ro" --build-arg PIP_CONFIG_FILE=/mnt/pip.conf
  for var in PIP_CERT REQUESTS_CA_BUNDLE SSL_CERT_FILE; do
    if [[ -n "${!var:-}" && -f "${!var}" ]]; then ca="${!var}"; break; fi
  done
  if [[ -z "$ca" ]] && command -v pip3 >/dev/null; then
    ca="$(pip3 config get global.cert 2>/dev/null || true)"
  fi
  [[ -z "$ca" && -f /etc/ssl/certs/ca-certificates.crt ]] && ca=/etc/ssl/certs/ca-certificates.crt
  if [[ -n "$ca" && -f "$ca" ]]; then
    cp "$ca" "$dir/ca.crt"
    printf '%s\0' --build-arg PIP_CERT=/mnt/ca.crt
  fi
  for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [[ -n "${!var:-}" ]] && printf '%s\0' --build-arg "$var=${!var}"
  done
  return 0
}

build() {
  ensure_tools
  base
  local hash
  hash="$(inputs_hash)"
  if [[ "$(label "$IMAGE" io.kubetune.inputs)" == "$hash" ]]; then
    log "image $IMAGE: cached (inputs $hash)"
    echo "$IMAGE"
    return
  fi
  require_root
  local settings
  BUILD_TMP="$(mktemp -d)"
  trap 'rm -rf "$BUILD_TMP"' EXIT
  mapfile -d '' -t settings < <(build_settings "$BUILD_TMP")
  log "image $IMAGE: buildah bud (inputs $hash)"
  # --layers keeps each step's layer, so a change to the code reuses the
  # dependency layers; --pull never: the base is local, no registry is asked.
  bah bud --layers --pull=never --isolation chroot --format oci \
    "${settings[@]}" --label "io.kubetune.inputs=$hash" --tag "$IMAGE" "$REPO" 2>&1 |
    tee "$BUILD_TMP/bud.log" >&2
  drop_stale "$BUILD_TMP/bud.log"
  log "image $IMAGE: done ($(bah images --format '{{.Size}}' "$IMAGE"))"
  echo "$IMAGE"
}

# With vfs every layer is a full copy of the tree (~350 MB here), so the cache
# keeps only the layers of the latest build: untagged images that build did not
# make or reuse are dropped.
drop_stale() {
  local used id name stale=()
  used="$(sed -nE 's/^--> ([0-9a-f]{11,})$/\1/p; s/.*Using cache ([0-9a-f]{64}).*/\1/p' "$1" |
    cut -c1-11)"
  while read -r id name; do
    [[ "$name" == "<none>" ]] || continue
    grep -qx "${id:0:11}" <<<"$used" || stale+=("$id")
  done < <(bah images --all --noheading --format '{{.ID}} {{.Name}}')
  if ((${#stale[@]})); then
    log "dropping ${#stale[@]} untagged image(s) of earlier builds"
    # One still used by a container (a test's, say) stays until the next build.
    bah rmi "${stale[@]}" >/dev/null 2>&1 || log "some were in use and stay for now"
  fi
}

# One build at a time per storage (several checkouts share it): each drops
# what the other's cache would need.
lock() {
  mkdir -p "$STORAGE"
  exec 9>"$STORAGE/build.lock"
  flock 9
}

case "${1:-build}" in
  build) lock; build ;;
  base) ensure_tools; lock; base ;;
  name) echo "$IMAGE" ;;
  buildah) shift; bah "$@" ;;
  prune) lock; bah rmi --all --force ;;
  *) die "unknown command '$1'; use build, base, name, buildah ARGS or prune" ;;
esac
