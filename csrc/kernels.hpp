// Declarations of every pydl kernel. Templates over float and double, instantiated in
// the .cpp of each family. Arguments: outputs, inputs, sizes, hyperparameters.
// m = batch size, n_in = input features, n_out = output features, n = features,
// C = classes, count = flat length. Row-major everywhere; W is (n_out, n_in).
// No kernel allocates, touches Python, or reads past the sizes it is given: callers
// (bindings.cpp) check every shape first.
#pragma once
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <utility>

#include "common.hpp"

namespace pydl {

// ---- dense.cpp ----
template <class T>
void dense_forward(T* A, const T* A_prev, const T* W, const T* b, int m, int n_in, int n_out,
                   Activation act, T alpha, bool batch_invariant);
template <class T>
void dense_backward(T* dA_prev, T* dW, T* db, T* dZ, const T* A, const T* A_prev, const T* W,
                    int m, int n_in, int n_out, Activation act, T alpha, T l2, T l1);
template <class T>
void activation_forward(T* A, const T* Z, std::ptrdiff_t count, Activation act, T alpha);
template <class T>
void activation_backward(T* dZ, const T* dA, const T* A, std::ptrdiff_t count, Activation act,
                         T alpha);
template <class T>
double weight_penalty(const T* W, std::ptrdiff_t count, double l2, double l1, int m);

// ---- batchnorm.cpp ----
template <class T>
void batchnorm_forward_train(T* out, T* mean, T* invstd, T* running_mean, T* running_var,
                             const T* Z, const T* gamma, const T* beta, int m, int n, T momentum,
                             T eps, Activation act, T alpha);
template <class T>
void batchnorm_forward_eval(T* out, const T* Z, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, int m, int n, T eps,
                            Activation act, T alpha);
template <class T>
void batchnorm_backward(T* dZ, T* dgamma, T* dbeta, const T* dout, const T* out, const T* Z,
                        const T* gamma, const T* mean, const T* invstd, int m, int n,
                        Activation act, T alpha);

// ---- losses.cpp ----  (each returns the cost; dZ may be null for cost only)
// Returns the number of labels out of [0, C) (0 on success) through *bad_labels.
template <class T>
double softmax_cross_entropy(T* dZ, const T* Z, const int64_t* labels, const T* Y, int m, int C,
                             int64_t* bad_labels);
template <class T>
void softmax(T* P, const T* Z, int m, int C);
template <class T>
double sigmoid_cross_entropy(T* dZ, const T* Z, const T* Y, std::ptrdiff_t count, int m);
template <class T>
double mean_squared_error(T* dZ, const T* Yhat, const T* Y, std::ptrdiff_t count);

// ---- dropout.cpp ----
template <class T>
void dropout_forward(T* out, const T* A, std::ptrdiff_t count, uint64_t seed, uint64_t step,
                     uint64_t layer, double keep_prob);
template <class T>
void dropout_backward(T* dA, const T* dout, std::ptrdiff_t count, uint64_t seed, uint64_t step,
                      uint64_t layer, double keep_prob);

// ---- optim.cpp ----
// Each returns whether every new value is finite (within half the largest T: optim.cpp);
// with check, nothing is written unless so.
template <class T>
bool sgd_step(T* theta, const T* grad, std::ptrdiff_t count, T lr, T weight_decay, bool check);
template <class T>
bool momentum_step(T* theta, T* v, const T* grad, std::ptrdiff_t count, T lr, double beta,
                   bool nesterov, T weight_decay, bool check);
template <class T>
bool rmsprop_step(T* theta, T* s, const T* grad, std::ptrdiff_t count, T lr, double beta, T eps,
                  T weight_decay, bool check);
template <class T>
bool adam_step(T* theta, T* v, T* s, const T* grad, std::ptrdiff_t count, T lr, double beta1,
               double beta2, T eps, int64_t t, T weight_decay, bool decoupled, bool check);

// ---- threads.cpp ----
void set_omp_threads(int n);
int get_omp_threads();
// Kernels whose arrays total at least this many bytes write their output with
// non-temporal stores (common.hpp: stream_output); set returns the previous value.
std::size_t set_stream_threshold(std::size_t bytes);
std::size_t get_stream_threshold();
// The column panels of a large batch's two passes (common.hpp: panel_shape): (bytes of each
// row, software prefetch of the next panel, each thread its own columns); force (for tests):
// bytes 0 restores the rule; returns the previous forced code (0, or
// bytes | prefetch | by_columns << 1).
std::tuple<int, bool, bool> get_panel_shape();
int force_panel_shape(int bytes, bool prefetch, bool by_columns);
// How many times a kernel's scratch buffer has grown (common.hpp: scratch), over all threads.
long long scratch_growth_count();
// For tests: the next `count` scratch growths throw std::bad_alloc; returns the count left
// over from before.
int fail_scratch_growths(int count);

}  // namespace pydl
