#!/usr/bin/env bash
# Renders a Helm chart like `helm template`, without helm (which cannot be installed here):
# builds scripts/render-chart/ (Go's text/template + sprig v3 + helm's functions) offline from
# Debian's Go packages, then runs it with the arguments given, e.g.
#
#   scripts/render-chart.sh etcd-repopulator charts/etcd-repopulator -n etcd-repopulator \
#       -f charts/etcd-repopulator/ci/all-features-values.yaml [--output json]
#
# Installs the packages when run as root on Debian (as CI does); otherwise says what is missing
# and exits with status 3.
set -euo pipefail
src="$(cd "$(dirname "$0")/render-chart" && pwd)"

# GOPATH mode against Debian's sources: no module proxy, no network.
export GOPATH=/usr/share/gocode GO111MODULE=off GOFLAGS= GOTOOLCHAIN=local
if [ -z "${GOCACHE:-}" ]; then
  # Go's default build cache is under $XDG_CACHE_HOME or $HOME/.cache; service users may have neither.
  cache_home="${XDG_CACHE_HOME:-${HOME:-/nonexistent}/.cache}"
  { mkdir -p "$cache_home" && [ -w "$cache_home" ]; } 2>/dev/null ||
    export GOCACHE="${TMPDIR:-/tmp}/render-chart-gocache-$(id -u)"
fi

packages=(golang-go golang-github-masterminds-sprig-dev golang-k8s-sigs-yaml-dev
  golang-github-burntsushi-toml-dev golang-gopkg-yaml.v3-dev)
sources=(github.com/Masterminds/sprig sigs.k8s.io/yaml github.com/BurntSushi/toml gopkg.in/yaml.v3)
missing() {
  command -v go >/dev/null 2>&1 || return 0
  for dir in "${sources[@]}"; do [ -d "$GOPATH/src/$dir" ] || return 0; done
  return 1
}
if missing; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Parallel runs (the tests) install once: the first takes the lock, the others find it done.
    exec 9>"${TMPDIR:-/tmp}/render-chart-apt.lock"
    command -v flock >/dev/null 2>&1 && flock 9
    if missing; then
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"; } >/dev/null || true
    fi
    exec 9>&-
  fi
  if missing; then
    echo "render-chart: Go and the chart renderer's libraries are missing: apt-get install ${packages[*]}" >&2
    exit 3
  fi
fi

# A fresh binary per run (Go's build cache makes it a link step), so parallel runs never share one.
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
(cd "$src" && go build -o "$bin/render-chart" .)
"$bin/render-chart" "$@"
