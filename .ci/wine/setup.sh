#!/usr/bin/env bash
# Makes this Linux machine run Go windows/amd64 binaries under Wine:
#   .ci/wine/setup.sh
#   GOOS=windows go test -exec "$PWD/.ci/wine/exec" ./...
# Installs Debian's wine64 and mingw-w64 when missing, then puts a ProcessPrng
# stand-in (processprng.c) into the Wine prefix. Idempotent; about a minute the first time.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export WINEDEBUG=-all
need=()
command -v wine >/dev/null || need+=(wine64 wine)
command -v x86_64-w64-mingw32-gcc >/dev/null || need+=(gcc-mingw-w64-x86-64)
if ((${#need[@]})); then
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
prefix="${WINEPREFIX:-$HOME/.wine}"
if [ ! -d "$prefix/drive_c/windows/system32" ]; then
  wineboot --init >/dev/null 2>&1 || true
  wineserver -w || true
fi
dll="$prefix/drive_c/windows/system32/bcryptprimitives.dll"
if [ ! -f "$dll" ]; then
  tmp="$(mktemp -d)"
  x86_64-w64-mingw32-gcc -shared -O2 -o "$tmp/bcryptprimitives.dll" "$here/processprng.c" -ladvapi32
  cp "$tmp/bcryptprimitives.dll" "$dll"
  rm -rf "$tmp"
fi
echo "wine ready: $(wine --version)"
