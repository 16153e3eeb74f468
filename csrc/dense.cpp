// Dense layer kernels.
// m = batch size, n_in = input features, n_out = output features. Row-major;
// W is (n_out, n_in).
#include <algorithm>
#include <cmath>

#include "blas.hpp"
#include "kernels.hpp"

namespace pydl {

// A = g(A_prev @ W.T + b)
// A (m, n_out) out; A_prev (m, n_in); W (n_out, n_in); b (n_out,) or null.
// Backward needs only A (g' is written in terms of g), so Z is never stored.
// batch_invariant: each row of A is computed from its row of A_prev alone, the same bits
// whatever the batch (gemm_rows); else the fastest product for the shape (gemm).
template <class T>
void dense_forward(T* A, const T* A_prev, const T* W, const T* b, int m, int n_in, int n_out,
                   Activation act, T alpha, bool batch_invariant) {
    if (batch_invariant)
        gemm_rows<T>(m, n_out, n_in, A_prev, W, A);
    else
        gemm<T>(false, true, m, n_out, n_in, T(1), A_prev, n_in, W, n_in, T(0), A, n_out);
    if (b == nullptr && act == Activation::identity) return;
    const std::ptrdiff_t total = std::ptrdiff_t(m) * n_out;
    with_activation(act, [&](auto tag) {
        constexpr Activation ACT = decltype(tag)::value;
        parallel_for(m, worth_parallel(total, activation_cost<ACT>),
                     [&](std::ptrdiff_t lo, std::ptrdiff_t hi) PYDL_NOINLINE {
                         for (int i = int(lo); i < int(hi); ++i) {
                             T* row = A + std::ptrdiff_t(i) * n_out;
                             if (b != nullptr) {
#pragma omp simd
                                 for (int j = 0; j < n_out; ++j)
                                     row[j] = activate<ACT>(row[j] + b[j], alpha);
                             } else {
#pragma omp simd
                                 for (int j = 0; j < n_out; ++j)
                                     row[j] = activate<ACT>(row[j], alpha);
                             }
                         }
                     });
    });
}

namespace {

// dZ = dA * g'(A) in place over rows [i0, i1) and columns [j0, j0 + w), acc[j] += dZ[i, j0 + j].
template <Activation ACT, class T>
PYDL_NOINLINE void bias_grad_tile(T* dZ, const T* A, int n, int i0, int i1, int j0, int w, T alpha,
                                  double* __restrict acc) {
    for (int i = i0; i < i1; ++i) {
        T* dz = dZ + std::ptrdiff_t(i) * n + j0;
        const T* a = A + std::ptrdiff_t(i) * n + j0;
#pragma omp simd
        for (int j = 0; j < w; ++j) {
            const T g = dz[j] * activation_grad<ACT>(a[j], alpha);
            if constexpr (ACT != Activation::identity) dz[j] = g;
            acc[j] += double(g);
        }
    }
}

}  // namespace

// dZ = dA * g'(A)          (in place: dZ holds dA on entry)       (m, n_out)
// db = sum_i dZ[i, :]      (n_out,) or null
// dW = dZ.T @ A_prev + (l2/m) W + (l1/(2m)) sign(W)              (n_out, n_in)
// dA_prev = dZ @ W         (m, n_in) or null (first layer)
template <class T>
void dense_backward(T* dA_prev, T* dW, T* db, T* dZ, const T* A, const T* A_prev, const T* W, int m,
                    int n_in, int n_out, Activation act, T alpha, T l2, T l1) {
    const std::ptrdiff_t total = std::ptrdiff_t(m) * n_out;
    if (db != nullptr) {
        double* const sums = scratch<double>(Scratch::sums, std::size_t(n_out));
        with_activation(act, [&](auto tag) {
            constexpr Activation ACT = decltype(tag)::value;
            column_reduce<1>(m, n_out, worth_parallel(total, 1), sums,
                             [&](int i0, int i1, int j0, int w, double* acc, std::ptrdiff_t) {
                                 bias_grad_tile<ACT>(dZ, A, n_out, i0, i1, j0, w, alpha, acc);
                             });
        });
        for (int j = 0; j < n_out; ++j) db[j] = T(sums[j]);
    } else if (act != Activation::identity) {
        activation_backward(dZ, dZ, A, total, act, alpha);
    }
    T beta = T(0);
    if (l2 != T(0) || l1 != T(0)) {
        const T c2 = l2 / T(m), c1 = l1 / (T(2) * T(m));
        const std::ptrdiff_t wcount = std::ptrdiff_t(n_out) * n_in;
        parallel_for(wcount, worth_parallel(wcount, 1),
                     [&](std::ptrdiff_t k0, std::ptrdiff_t k1) PYDL_NOINLINE {
#pragma omp simd
                         for (std::ptrdiff_t k = k0; k < k1; ++k) {
                             const T w = W[k];
                             dW[k] = c2 * w + c1 * T((w > T(0)) - (w < T(0)));
                         }
                     });
        beta = T(1);
    }
    gemm<T>(true, false, n_out, n_in, m, T(1), dZ, n_out, A_prev, n_in, beta, dW, n_in);
    if (dA_prev != nullptr)
        gemm<T>(false, false, m, n_in, n_out, T(1), dZ, n_out, W, n_in, T(0), dA_prev, n_in);
}

// A = g(Z), elementwise; A may alias Z.
template <class T>
void activation_forward(T* A, const T* Z, std::ptrdiff_t count, Activation act, T alpha) {
    with_activation(act, [&](auto tag) {
        constexpr Activation ACT = decltype(tag)::value;
        parallel_for(count, worth_parallel(count, activation_cost<ACT>),
                     [&](std::ptrdiff_t k0, std::ptrdiff_t k1) PYDL_NOINLINE {
                         const T a = alpha;  // a local, not a load through the capture
#pragma omp simd
                         for (std::ptrdiff_t k = k0; k < k1; ++k) A[k] = activate<ACT>(Z[k], a);
                     });
    });
}

// dZ = dA * g'(A), elementwise; dZ may alias dA.
template <class T>
void activation_backward(T* dZ, const T* dA, const T* A, std::ptrdiff_t count, Activation act,
                         T alpha) {
    with_activation(act, [&](auto tag) {
        constexpr Activation ACT = decltype(tag)::value;
        parallel_for(count, worth_parallel(count, 1),
                     [&](std::ptrdiff_t k0, std::ptrdiff_t k1) PYDL_NOINLINE {
                         const T a = alpha;
#pragma omp simd
                         for (std::ptrdiff_t k = k0; k < k1; ++k)
                             dZ[k] = dA[k] * activation_grad<ACT>(A[k], a);
                     });
    });
}

// Regularization cost of one weight matrix: l2/(2m) ||W||_F^2 + l1/(2m) sum |W|.
template <class T>
double weight_penalty(const T* W, std::ptrdiff_t count, double l2, double l1, int m) {
    double sq = 0.0, ab = 0.0;
    for (std::ptrdiff_t k = 0; k < count; ++k) {
        const double w = W[k];
        sq += w * w;
        ab += std::fabs(w);
    }
    return (l2 * sq + l1 * ab) / (2.0 * m);
}

#define PYDL_INSTANTIATE(T)                                                                      \
    template void dense_forward<T>(T*, const T*, const T*, const T*, int, int, int, Activation,  \
                                   T, bool);                                                     \
    template void dense_backward<T>(T*, T*, T*, T*, const T*, const T*, const T*, int, int, int, \
                                    Activation, T, T, T);                                        \
    template void activation_forward<T>(T*, const T*, std::ptrdiff_t, Activation, T);            \
    template void activation_backward<T>(T*, const T*, const T*, std::ptrdiff_t, Activation, T); \
    template double weight_penalty<T>(const T*, std::ptrdiff_t, double, double, int);
PYDL_INSTANTIATE(float)
PYDL_INSTANTIATE(double)
#undef PYDL_INSTANTIATE

}  // namespace pydl
