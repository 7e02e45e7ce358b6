#!/usr/bin/env bash
# Set-up for the unit tier: Debian's libonnx-testdata (the ONNX operator conformance cases that
# test/onnxConformance.test.ts runs). Idempotent: skips it when it is there.
set -euo pipefail
if [ ! -d /usr/share/libonnx-testdata/data/node ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "== unit setup: apt-get install libonnx-testdata"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends libonnx-testdata >/dev/null
fi
