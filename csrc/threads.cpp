// OpenMP thread count (pydl's team, which also runs large products in parts: blas.cpp), and the
// size above which kernels write their outputs around the caches, and the shape of batch
// norm's column panels.
#include <stdexcept>
#include <tuple>
#include <utility>

#include "common.hpp"
#include "kernels.hpp"

namespace pydl {

// One count for every calling thread: the parallel regions ask for it (common.hpp: in_team).
void set_omp_threads(int n) {
    if (n < 1) throw std::invalid_argument("n: must be >= 1");
    thread_count().store(n);
}

int get_omp_threads() { return max_threads(); }

std::size_t set_stream_threshold(std::size_t bytes) { return stream_min_bytes().exchange(bytes); }

std::size_t get_stream_threshold() { return stream_min_bytes().load(); }

std::tuple<int, bool, bool> get_panel_shape() {
    const PanelShape shape = panel_shape();
    return {shape.bytes, shape.prefetch, shape.by_columns};
}

int force_panel_shape(int bytes, bool prefetch, bool by_columns) {
    if (bytes != 0 && (bytes < 64 || bytes > (1 << 20) || bytes % 64 != 0))
        throw std::invalid_argument("bytes: 0 (the rule) or a multiple of 64 in [64, 2^20]");
    const int code = bytes == 0 ? 0 : bytes | int(prefetch) | int(by_columns) << 1;
    return forced_panel_shape().exchange(code);
}

long long scratch_growth_count() { return scratch_growths().load(); }

int fail_scratch_growths(int count) {
    if (count < 0) throw std::invalid_argument("count: must be >= 0");
    return scratch_failures().exchange(count);
}

}  // namespace pydl
