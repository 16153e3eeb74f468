// OpenMP thread count (the BLAS pool is set from Python through threadpoolctl).
#include "common.hpp"
#include "kernels.hpp"

namespace pydl {

void set_omp_threads(int n) {
#ifdef PYDL_HAVE_OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

int get_omp_threads() { return max_threads(); }

}  // namespace pydl
