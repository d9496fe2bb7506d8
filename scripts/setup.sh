#!/usr/bin/env bash
# Installs every system dependency of pgolf from Debian's own repositories.
# Idempotent and non-interactive: packages already present are left alone.
# Nothing is downloaded from anywhere else, at build or at run time.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config
  libzstd-dev zstd                       # artifact compression (library + CLI for the baseline figure)
  zlib1g-dev                             # reading the dictzip (.dict.dz) corpus file
  libsentencepiece-dev sentencepiece     # tokenizer library and the spm_* tools
  libgtest-dev libgmock-dev googletest   # unit tests
  libbenchmark-dev                       # microbenchmarks
  dict-gcide                             # the embedded default corpus (GCIDE)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
# dict-gcide pulls in dictd, whose service must not start during a build: policy-rc.d (when
# present) already refuses it; --no-install-recommends keeps the set minimal.
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
