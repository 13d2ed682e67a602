#!/usr/bin/env bash
# Packs .gpu/ for h100-s31.sh: session 32's pack-s32.sh does it (bench-lean.mjs from the tree and
# bench-lean-oldcombine.mjs with the combine of 9cb5bc2, PyTorch's decode script), with the
# bundles of h200-s32-tc.sh and h200-s32-sage.sh besides. Run from the repository root.
exec bash "$(dirname "$0")/pack-s32.sh"
