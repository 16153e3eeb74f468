// GEMM shim over SciPy's BLAS; see blas.hpp.
#include "blas.hpp"

#include <Python.h>

#include <stdexcept>
#include <string>

namespace pydl {
namespace {

using sgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*,
                          const float*, const float*, const int*, const float*, const int*,
                          const float*, float*, const int*);
using dgemm_fn = void (*)(const char*, const char*, const int*, const int*, const int*,
                          const double*, const double*, const int*, const double*, const int*,
                          const double*, double*, const int*);

sgemm_fn g_sgemm = nullptr;
dgemm_fn g_dgemm = nullptr;

void* capsule_pointer(PyObject* capi, const char* name) {
    PyObject* cap = PyDict_GetItemString(capi, name);  // borrowed
    if (cap == nullptr || !PyCapsule_CheckExact(cap))
        throw std::runtime_error(std::string("scipy.linalg.cython_blas has no capsule for ") +
                                 name);
    void* p = PyCapsule_GetPointer(cap, PyCapsule_GetName(cap));
    if (p == nullptr) {
        PyErr_Clear();
        throw std::runtime_error(std::string("could not read the capsule for ") + name);
    }
    return p;
}

}  // namespace

void blas_init() {
    if (g_sgemm && g_dgemm) return;
    PyObject* mod = PyImport_ImportModule("scipy.linalg.cython_blas");
    if (mod == nullptr) {
        PyErr_Clear();
        throw std::runtime_error(
            "pydl needs SciPy's BLAS (scipy.linalg.cython_blas); install scipy");
    }
    PyObject* capi = PyObject_GetAttrString(mod, "__pyx_capi__");
    Py_DECREF(mod);
    if (capi == nullptr || !PyDict_Check(capi)) {
        Py_XDECREF(capi);
        PyErr_Clear();
        throw std::runtime_error("scipy.linalg.cython_blas has no __pyx_capi__");
    }
    try {
        g_sgemm = reinterpret_cast<sgemm_fn>(capsule_pointer(capi, "sgemm"));
        g_dgemm = reinterpret_cast<dgemm_fn>(capsule_pointer(capi, "dgemm"));
    } catch (...) {
        Py_DECREF(capi);
        throw;
    }
    Py_DECREF(capi);
}

// Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the same call
// with the operands (and their transposes) swapped.
template <>
void gemm<float>(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A,
                 int lda, const float* B, int ldb, float beta, float* C, int ldc) {
    const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    g_sgemm(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}

template <>
void gemm<double>(bool trans_a, bool trans_b, int M, int N, int K, double alpha, const double* A,
                  int lda, const double* B, int ldb, double beta, double* C, int ldc) {
    const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    g_dgemm(&tb, &ta, &N, &M, &K, &alpha, B, &ldb, A, &lda, &beta, C, &ldc);
}

}  // namespace pydl
