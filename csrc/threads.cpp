// OpenMP thread count (the BLAS pool is set from Python through threadpoolctl), and the
// size above which kernels write their outputs around the caches.
#include "blas.hpp"
#include "common.hpp"
#include "kernels.hpp"

namespace pydl {

void set_omp_threads(int n) {
    set_blas_threads(n);
#ifdef PYDL_HAVE_OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

int get_omp_threads() { return max_threads(); }

std::size_t set_stream_threshold(std::size_t bytes) { return stream_min_bytes().exchange(bytes); }

std::size_t get_stream_threshold() { return stream_min_bytes().load(); }

}  // namespace pydl
