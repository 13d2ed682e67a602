// The stream-K (LeanAttention) decode partition planner, the C++ twin of
// packages/skeleton/src/cpu/partition.ts planDecodePartition({ kind: 'streamK' }): the key tiles
// of all units (one unit = one (b, h, query block) of the forward, in that order), concatenated
// in unit order, cut into `workers` contiguous ranges whose sizes differ by at most one (the
// first total mod workers ranges hold one more); a range crossing unit boundaries becomes one
// piece per unit it touches; workers beyond the total get no piece. The engine plans in C++
// because its units come from its own tiling (kFwdBq query rows, kFwdTileK keys per ISA), which
// the TS layer does not know; the addon's planStreamK exposes this function so that a test
// holds it to the TS planner on equal inputs.
//
// Pieces are numbered in worker order; the pieces of one unit are consecutive in that order and
// in key order, so a fix-up merging a unit's pieces by index reduces its tiles in order.
// Time and memory O(units + workers), never per tile.
//
// Namespaced per includer (ATTNKIT_NS: each ISA's kernels, and the addon's own copy), so that no
// out-of-line std::vector code built with one ISA's flags is shared with another's.
#pragma once

#include <cstdint>
#include <vector>

namespace attnkit {
namespace ATTNKIT_NS {

struct StreamKPiece {
  int64_t unit, begin, end;  // key tiles [begin, end) of `unit`, relative to its first tile
};

struct StreamKPlan {
  std::vector<int64_t> workerStart;  // workers + 1 offsets into pieces
  std::vector<StreamKPiece> pieces;
};

// tiles[u] >= 0 for u < units; workers >= 1. The caller checks the total fits an int64.
inline StreamKPlan planStreamK(const int64_t* tiles, int64_t units, int64_t workers) {
  int64_t total = 0;
  for (int64_t u = 0; u < units; u++) total += tiles[u];
  StreamKPlan plan;
  plan.workerStart.reserve(static_cast<size_t>(workers + 1));
  const int64_t base = total / workers, extra = total % workers;
  int64_t unit = 0, start = 0;  // unit `unit` starts at global tile `start`
  for (int64_t w = 0; w < workers; w++) {
    plan.workerStart.push_back(static_cast<int64_t>(plan.pieces.size()));
    const int64_t g0 = w * base + (w < extra ? w : extra);
    const int64_t g1 = g0 + base + (w < extra ? 1 : 0);
    for (int64_t pos = g0; pos < g1;) {
      // Skip finished units and zero-tile ones (they own no global tile).
      while (start + tiles[unit] <= pos) start += tiles[unit++];
      const int64_t end = g1 < start + tiles[unit] ? g1 : start + tiles[unit];
      plan.pieces.push_back({unit, pos - start, end - start});
      pos = end;
    }
  }
  plan.workerStart.push_back(static_cast<int64_t>(plan.pieces.size()));
  return plan;
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
