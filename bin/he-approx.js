#!/usr/bin/env node
'use strict';
// Entry point: the compiled CLI lives in dist/ (run `npm run build` after a fresh clone; `npm ci` does it via `prepare`).
const { main } = require('../dist/src/cli/main.js');
main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
