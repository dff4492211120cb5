#!/usr/bin/env bash
# What the end-to-end and browser tests need from Debian, installed where missing (as root):
# buildah and runc build the images and debootstrap their local base; iptables, conntrack and
# the CNI plugins run the node (../shared/k8s/node); chromium and its driver run the page's
# browser tests. Not root: says what is missing, and the tests that need it fail saying so.
set -euo pipefail
missing=()
for tool in buildah runc debootstrap iptables conntrack chromium; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
command -v chromedriver >/dev/null || missing+=(chromium-driver)
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
(( ${#missing[@]} )) || exit 0
if [[ $(id -u) != 0 ]]; then
  echo "system-deps: not root, so not installing: ${missing[*]} (the e2e and browser tests need them)" >&2
  exit 0
fi
echo "system-deps: apt-get install ${missing[*]}" >&2
apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
