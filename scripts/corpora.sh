#!/bin/sh
# Build the real-text corpora that configs/text/tiny.yaml and configs/language/tiny.yaml
# read (`shipped: linux-doc`, `shipped: korean-help`; docs/benchmarks.md gives sizes):
# apt-installs the Debian packages that ship the text, then writes one JSONL file per
# corpus and manifest.json into $UNDO_CORPORA (default ~/.cache/undo/corpora).
#   scripts/corpora.sh          # as root, or with sudo available
set -eu
PACKAGES="linux-doc-6.1 libreoffice-help-ko"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! dpkg -s $PACKAGES >/dev/null 2>&1; then
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends $PACKAGES
fi
exec python -m undo.benchmarks.text.debian "$@"
