#!/usr/bin/env bash
# Rebuilds the console's vendored JavaScript from the npm packages pinned in
# tools/console/package-lock.json: the console loads nothing from a CDN at run time, so the dist
# files and their licences are copied into the Python package. Run after changing a version.
set -euo pipefail
cd "$(dirname "$0")/console"
npm ci --ignore-scripts --no-audit --no-fund
out=../../src/kizuna/console/static/vendor
rm -rf "$out"
mkdir -p "$out/leaflet/images" "$out/uplot"
cp node_modules/leaflet/dist/leaflet.js node_modules/leaflet/dist/leaflet.css "$out/leaflet/"
cp node_modules/leaflet/dist/images/*.png "$out/leaflet/images/"
cp node_modules/leaflet/LICENSE "$out/leaflet/LICENSE"
cp node_modules/uplot/dist/uPlot.esm.js node_modules/uplot/dist/uPlot.min.css "$out/uplot/"
cp node_modules/uplot/LICENSE "$out/uplot/LICENSE"
for package in leaflet uplot; do
  node -e "const p=require('./node_modules/$package/package.json');console.log(p.name+' '+p.version+' ('+p.license+')')"
done > "$out/VERSIONS"
rm -rf node_modules
cat "$out/VERSIONS"
