#!/usr/bin/env bash
# Gradescope runs this once, as root, when the autograder is built: the graders' Python packages.
# (A CPU-only torch wheel is much smaller than the default one: see PyTorch's install page.)
set -euo pipefail
SOURCE="$(cd "$(dirname "$0")" && pwd)"
apt-get install -y python3 python3-pip >/dev/null 2>&1 || true
pip3 install -r "$SOURCE/requirements.txt"
