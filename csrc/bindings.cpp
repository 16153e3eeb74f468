// Python bindings of pydl._core: convert and check, no math.
// Every array argument must already have the kernel's dtype (float32 or float64, the
// same for all of a call's float arrays), be C-contiguous and have exactly the shape the
// kernel will touch; outputs must be writable. Anything else raises before a kernel runs,
// so no kernel can read or write out of bounds. The GIL is released around every kernel.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <initializer_list>
#include <stdexcept>

#include "blas.hpp"
#include "kernels.hpp"

namespace py = pybind11;
using pydl::Activation;

namespace {

enum class DType { f32, f64 };

// A shape to check against, held without allocating (a training step calls these checks
// dozens of times): up to 4 dims of a braced list, copied, or an array's (valid while the
// array lives).
struct Shape {
    py::ssize_t own[4] = {0, 0, 0, 0};
    const py::ssize_t* dims;
    std::size_t ndim;
    Shape(std::initializer_list<py::ssize_t> list) : dims(own), ndim(list.size()) {
        if (ndim > 4) throw std::logic_error("Shape: more than 4 dims in a braced list");
        std::copy(list.begin(), list.end(), own);
    }
    explicit Shape(const py::array& a) : dims(a.shape()), ndim(std::size_t(a.ndim())) {}
    Shape(const Shape&) = delete;  // dims may point into own
    Shape& operator=(const Shape&) = delete;
    bool operator==(const Shape& o) const {
        return ndim == o.ndim && std::equal(dims, dims + ndim, o.dims);
    }
};

std::string shape_str(const Shape& s) {
    std::string out = "(";
    for (size_t i = 0; i < s.ndim; ++i) out += (i ? ", " : "") + std::to_string(s.dims[i]);
    return out + (s.ndim == 1 ? ",)" : ")");
}

// Same type as `want`: identity is the fast path, but an equal dtype can be another object
// (arrays that went through pickle, e.g. Dask or multiprocessing workers, carry a copy of
// the descriptor). == is NumPy's equivalence: byte-swapped data does not match.
bool has_dtype(const py::array& a, const py::dtype& want) {
    const py::dtype d = a.dtype();
    return d.is(want) || d.equal(want);
}

DType dtype_of(const py::array& a, const char* name) {
    if (has_dtype(a, py::dtype::of<float>())) return DType::f32;
    if (has_dtype(a, py::dtype::of<double>())) return DType::f64;
    throw py::type_error(std::string(name) + " must be float32 or float64, got " +
                         std::string(py::str(a.dtype())));
}

// The argument whose dtype the running call's arrays must all share (set by dispatch).
thread_local const char* dtype_source = nullptr;

// Checks dtype T, C-contiguity, exact shape and (for outputs) writability; returns data.
template <class T>
T* checked(const py::array& a, const char* name, const Shape& shape, bool writable) {
    if (!has_dtype(a, py::dtype::of<T>())) {
        const std::string from = dtype_source != nullptr && std::string(dtype_source) != name
                                     ? std::string(" (that of ") + dtype_source + ")"
                                     : std::string();
        throw py::type_error(std::string(name) + " must have dtype " +
                             std::string(py::str(py::dtype::of<T>())) + from + ", got " +
                             std::string(py::str(a.dtype())));
    }
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(std::string(name) + " must be C-contiguous");
    const Shape got(a);
    if (!(got == shape))
        throw py::value_error(std::string(name) + " must have shape " + shape_str(shape) +
                              ", got " + shape_str(got));
    if (writable && !a.writeable()) throw py::value_error(std::string(name) + " must be writable");
    return static_cast<T*>(const_cast<void*>(a.data()));
}

template <class T>
T* checked_opt(const py::object& o, const char* name, const Shape& shape, bool writable) {
    if (o.is_none()) return nullptr;
    if (!py::isinstance<py::array>(o))
        throw py::type_error(std::string(name) + " must be a numpy array or None");
    return checked<T>(py::reinterpret_borrow<py::array>(o), name, shape, writable);
}

// Size of axis `axis` of a, which must be an ndim-array with every axis in [1, INT_MAX].
int dim(const py::array& a, const char* name, int ndim, int axis) {
    if (a.ndim() != ndim)
        throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got " +
                              std::to_string(a.ndim()) + "-D");
    for (int k = 0; k < ndim; ++k)
        if (a.shape(k) < 1 || a.shape(k) > INT_MAX)
            throw py::value_error(std::string(name) + " has an empty or too large axis " +
                                  shape_str(Shape(a)));
    return int(a.shape(axis));
}

py::ssize_t nonempty_size(const py::array& a, const char* name) {
    if (a.size() < 1) throw py::value_error(std::string(name) + " must not be empty");
    return a.size();
}

Shape shape_of(const py::array& a) { return Shape(a); }

// The memory of one checked argument: `count` T's from p (p null: an absent optional).
struct Mem {
    const char* name;
    std::uintptr_t at;
    std::size_t bytes;
    template <class T>
    Mem(const char* name_, const T* p, py::ssize_t count)
        : name(name_), at(reinterpret_cast<std::uintptr_t>(p)),
          bytes(p == nullptr ? 0 : std::size_t(count) * sizeof(T)) {}
};

bool overlap(const Mem& a, const Mem& b) {
    return a.bytes > 0 && b.bytes > 0 && a.at < b.at + b.bytes && b.at < a.at + a.bytes;
}

// An output must not share memory with another argument: the result would depend on the
// order of the kernel's loads and stores (and, threaded, on timing).
void disjoint(const Mem& out, std::initializer_list<Mem> others) {
    for (const Mem& o : others)
        if (overlap(out, o))
            throw py::value_error(std::string(out.name) + " must not overlap " + o.name);
}

// An elementwise kernel may also write in place: out exactly `in` (the same array memory).
void same_or_disjoint(const Mem& out, const Mem& in) {
    if (overlap(out, in) && !(out.at == in.at && out.bytes == in.bytes))
        throw py::value_error(std::string(out.name) + " must be " + in.name +
                              " itself (in place) or not overlap it");
}

Activation activation_of(int act) {
    if (act < 0 || act > 4) throw py::value_error("activation must be a code in 0..4");
    return Activation(act);
}

// Runs f(T{}) with T the dtype of `a`.
template <class F>
auto dispatch(const py::array& a, const char* name, F&& f) {
    struct Source {  // names `name` in the dtype errors of f's checks, until f returns
        const char* before = dtype_source;
        explicit Source(const char* n) { dtype_source = n; }
        ~Source() { dtype_source = before; }
    } source(name);
    if (dtype_of(a, name) == DType::f32) return f(float{});
    return f(double{});
}

// ---------------------------------------------------------------- dense

void dense_forward(py::array A, py::array A_prev, py::array W, py::object b, int act,
                   double alpha, bool batch_invariant) {
    const int m = dim(A_prev, "A_prev", 2, 0), n_in = dim(A_prev, "A_prev", 2, 1);
    const int n_out = dim(W, "W", 2, 0);
    const Activation a = activation_of(act);
    dispatch(A_prev, "A_prev", [&](auto t) {
        using T = decltype(t);
        const T* pX = checked<T>(A_prev, "A_prev", {m, n_in}, false);
        const T* pW = checked<T>(W, "W", {n_out, n_in}, false);
        const T* pb = checked_opt<T>(b, "b", {n_out}, false);
        T* pA = checked<T>(A, "A", {m, n_out}, true);
        disjoint({"A", pA, py::ssize_t(m) * n_out},
                 {{"A_prev", pX, py::ssize_t(m) * n_in}, {"W", pW, py::ssize_t(n_out) * n_in},
                  {"b", pb, n_out}});
        py::gil_scoped_release nogil;
        pydl::dense_forward<T>(pA, pX, pW, pb, m, n_in, n_out, a, T(alpha), batch_invariant);
    });
}

void dense_backward(py::object dA_prev, py::array dW, py::object db, py::array dZ, py::array A,
                    py::array A_prev, py::array W, int act, double alpha, double l2, double l1) {
    const int m = dim(A_prev, "A_prev", 2, 0), n_in = dim(A_prev, "A_prev", 2, 1);
    const int n_out = dim(W, "W", 2, 0);
    const Activation a = activation_of(act);
    dispatch(A_prev, "A_prev", [&](auto t) {
        using T = decltype(t);
        const T* pX = checked<T>(A_prev, "A_prev", {m, n_in}, false);
        const T* pW = checked<T>(W, "W", {n_out, n_in}, false);
        const T* pA = checked<T>(A, "A", {m, n_out}, false);
        T* pdZ = checked<T>(dZ, "dZ", {m, n_out}, true);
        T* pdW = checked<T>(dW, "dW", {n_out, n_in}, true);
        T* pdb = checked_opt<T>(db, "db", {n_out}, true);
        T* pdX = checked_opt<T>(dA_prev, "dA_prev", {m, n_in}, true);
        const py::ssize_t mi = py::ssize_t(m) * n_in, mo = py::ssize_t(m) * n_out;
        const py::ssize_t oi = py::ssize_t(n_out) * n_in;
        const Mem X{"A_prev", pX, mi}, Wm{"W", pW, oi}, Am{"A", pA, mo};
        const Mem dZm{"dZ", pdZ, mo}, dWm{"dW", pdW, oi}, dbm{"db", pdb, n_out};
        const Mem dXm{"dA_prev", pdX, mi};
        disjoint(dZm, {X, Wm, Am});
        disjoint(dWm, {X, Wm, Am, dZm});
        disjoint(dbm, {X, Wm, Am, dZm, dWm});
        disjoint(dXm, {X, Wm, Am, dZm, dWm, dbm});
        py::gil_scoped_release nogil;
        pydl::dense_backward<T>(pdX, pdW, pdb, pdZ, pA, pX, pW, m, n_in, n_out, a, T(alpha), T(l2),
                                T(l1));
    });
}

void activation_forward(py::array A, py::array Z, int act, double alpha) {
    const py::ssize_t count = nonempty_size(Z, "Z");
    const Activation a = activation_of(act);
    dispatch(Z, "Z", [&](auto t) {
        using T = decltype(t);
        const T* pZ = checked<T>(Z, "Z", shape_of(Z), false);
        T* pA = checked<T>(A, "A", shape_of(Z), true);
        same_or_disjoint({"A", pA, count}, {"Z", pZ, count});
        py::gil_scoped_release nogil;
        pydl::activation_forward<T>(pA, pZ, count, a, T(alpha));
    });
}

void activation_backward(py::array dZ, py::array dA, py::array A, int act, double alpha) {
    const py::ssize_t count = nonempty_size(A, "A");
    const Activation a = activation_of(act);
    dispatch(A, "A", [&](auto t) {
        using T = decltype(t);
        const T* pAo = checked<T>(A, "A", shape_of(A), false);
        const T* pdA = checked<T>(dA, "dA", shape_of(A), false);
        T* pdZ = checked<T>(dZ, "dZ", shape_of(A), true);
        same_or_disjoint({"dZ", pdZ, count}, {"dA", pdA, count});
        same_or_disjoint({"dZ", pdZ, count}, {"A", pAo, count});
        py::gil_scoped_release nogil;
        pydl::activation_backward<T>(pdZ, pdA, pAo, count, a, T(alpha));
    });
}

double weight_penalty(py::array W, double l2, double l1, int m) {
    const py::ssize_t count = nonempty_size(W, "W");
    if (m < 1) throw py::value_error("m must be >= 1");
    return dispatch(W, "W", [&](auto t) {
        using T = decltype(t);
        const T* pW = checked<T>(W, "W", shape_of(W), false);
        py::gil_scoped_release nogil;
        return pydl::weight_penalty<T>(pW, count, l2, l1, m);
    });
}

// ---------------------------------------------------------------- batch norm

void batchnorm_forward_train(py::array out, py::array mean, py::array invstd,
                             py::object running_mean, py::object running_var, py::array Z,
                             py::array gamma, py::array beta, double momentum, double eps, int act,
                             double alpha) {
    const int m = dim(Z, "Z", 2, 0), n = dim(Z, "Z", 2, 1);
    const Activation a = activation_of(act);
    if (running_mean.is_none() != running_var.is_none())
        throw py::value_error("running_mean and running_var must both be arrays or both None");
    dispatch(Z, "Z", [&](auto t) {
        using T = decltype(t);
        T* pout = checked<T>(out, "out", {m, n}, true);
        T* pmu = checked<T>(mean, "mean", {n}, true);
        T* pinv = checked<T>(invstd, "invstd", {n}, true);
        T* prm = checked_opt<T>(running_mean, "running_mean", {n}, true);
        T* prv = checked_opt<T>(running_var, "running_var", {n}, true);
        const T* pZ = checked<T>(Z, "Z", {m, n}, false);
        const T* pg = checked<T>(gamma, "gamma", {n}, false);
        const T* pb = checked<T>(beta, "beta", {n}, false);
        const py::ssize_t mn = py::ssize_t(m) * n;
        const Mem Zm{"Z", pZ, mn}, gm{"gamma", pg, n}, bm{"beta", pb, n};
        const Mem outm{"out", pout, mn}, mum{"mean", pmu, n}, invm{"invstd", pinv, n};
        const Mem rmm{"running_mean", prm, n}, rvm{"running_var", prv, n};
        disjoint(outm, {Zm, gm, bm});
        disjoint(mum, {Zm, gm, bm, outm});
        disjoint(invm, {Zm, gm, bm, outm, mum});
        disjoint(rmm, {Zm, gm, bm, outm, mum, invm});
        disjoint(rvm, {Zm, gm, bm, outm, mum, invm, rmm});
        py::gil_scoped_release nogil;
        pydl::batchnorm_forward_train<T>(pout, pmu, pinv, prm, prv, pZ, pg, pb, m, n,
                                         T(momentum), T(eps), a, T(alpha));
    });
}

void batchnorm_forward_eval(py::array out, py::array Z, py::array gamma, py::array beta,
                            py::array running_mean, py::array running_var, double eps, int act,
                            double alpha) {
    const int m = dim(Z, "Z", 2, 0), n = dim(Z, "Z", 2, 1);
    const Activation a = activation_of(act);
    dispatch(Z, "Z", [&](auto t) {
        using T = decltype(t);
        T* pout = checked<T>(out, "out", {m, n}, true);
        const T* pZ = checked<T>(Z, "Z", {m, n}, false);
        const T* pg = checked<T>(gamma, "gamma", {n}, false);
        const T* pb = checked<T>(beta, "beta", {n}, false);
        const T* prm = checked<T>(running_mean, "running_mean", {n}, false);
        const T* prv = checked<T>(running_var, "running_var", {n}, false);
        const py::ssize_t mn = py::ssize_t(m) * n;
        const Mem outm{"out", pout, mn};
        same_or_disjoint(outm, {"Z", pZ, mn});
        disjoint(outm, {{"gamma", pg, n}, {"beta", pb, n}, {"running_mean", prm, n},
                        {"running_var", prv, n}});
        py::gil_scoped_release nogil;
        pydl::batchnorm_forward_eval<T>(pout, pZ, pg, pb, prm, prv, m, n, T(eps), a, T(alpha));
    });
}

void batchnorm_backward(py::array dZ, py::array dgamma, py::array dbeta, py::array dout,
                        py::array out, py::array Z, py::array gamma, py::array mean,
                        py::array invstd, int act, double alpha) {
    const int m = dim(Z, "Z", 2, 0), n = dim(Z, "Z", 2, 1);
    const Activation a = activation_of(act);
    dispatch(Z, "Z", [&](auto t) {
        using T = decltype(t);
        T* pdZ = checked<T>(dZ, "dZ", {m, n}, true);
        T* pdg = checked<T>(dgamma, "dgamma", {n}, true);
        T* pdb = checked<T>(dbeta, "dbeta", {n}, true);
        const T* pdo = checked<T>(dout, "dout", {m, n}, false);
        const T* po = checked<T>(out, "out", {m, n}, false);
        const T* pZ = checked<T>(Z, "Z", {m, n}, false);
        const T* pg = checked<T>(gamma, "gamma", {n}, false);
        const T* pmu = checked<T>(mean, "mean", {n}, false);
        const T* pinv = checked<T>(invstd, "invstd", {n}, false);
        const py::ssize_t mn = py::ssize_t(m) * n;
        const Mem om{"out", po, mn}, Zm{"Z", pZ, mn}, gm{"gamma", pg, n}, mum{"mean", pmu, n};
        const Mem invm{"invstd", pinv, n}, dZm{"dZ", pdZ, mn}, dom{"dout", pdo, mn};
        const Mem dgm{"dgamma", pdg, n}, dbm{"dbeta", pdb, n};
        same_or_disjoint(dZm, dom);
        disjoint(dZm, {om, Zm, gm, mum, invm});
        disjoint(dgm, {om, Zm, gm, mum, invm, dZm, dom});
        disjoint(dbm, {om, Zm, gm, mum, invm, dZm, dom, dgm});
        py::gil_scoped_release nogil;
        pydl::batchnorm_backward<T>(pdZ, pdg, pdb, pdo, po, pZ, pg, pmu, pinv, m, n, a, T(alpha));
    });
}

// ---------------------------------------------------------------- losses

double softmax_cross_entropy(py::object dZ, py::array Z, py::object labels, py::object Y) {
    const int m = dim(Z, "Z", 2, 0), C = dim(Z, "Z", 2, 1);
    if (labels.is_none() == Y.is_none())
        throw py::value_error("pass exactly one of labels (m,) int64 and Y (m, C)");
    const int64_t* pl = nullptr;
    if (!labels.is_none()) {
        if (!py::isinstance<py::array>(labels))
            throw py::type_error("labels must be a numpy array");
        pl = checked<int64_t>(py::reinterpret_borrow<py::array>(labels), "labels", {m}, false);
    }
    return dispatch(Z, "Z", [&](auto t) {
        using T = decltype(t);
        T* pdZ = checked_opt<T>(dZ, "dZ", {m, C}, true);
        const T* pZ = checked<T>(Z, "Z", {m, C}, false);
        const T* pY = checked_opt<T>(Y, "Y", {m, C}, false);
        const py::ssize_t mc = py::ssize_t(m) * C;
        disjoint({"dZ", pdZ, mc}, {{"Z", pZ, mc}, {"Y", pY, mc}, {"labels", pl, m}});
        int64_t bad = 0;
        double cost;
        {
            py::gil_scoped_release nogil;
            cost = pydl::softmax_cross_entropy<T>(pdZ, pZ, pl, pY, m, C, &bad);
        }
        if (bad != 0)
            throw py::value_error("labels: " + std::to_string(bad) + " of them are outside [0, " +
                                  std::to_string(C) + ")");
        return cost;
    });
}

void softmax(py::array P, py::array Z) {
    const int m = dim(Z, "Z", 2, 0), C = dim(Z, "Z", 2, 1);
    dispatch(Z, "Z", [&](auto t) {
        using T = decltype(t);
        T* pP = checked<T>(P, "P", {m, C}, true);
        const T* pZ = checked<T>(Z, "Z", {m, C}, false);
        same_or_disjoint({"P", pP, py::ssize_t(m) * C}, {"Z", pZ, py::ssize_t(m) * C});
        py::gil_scoped_release nogil;
        pydl::softmax<T>(pP, pZ, m, C);
    });
}

double sigmoid_cross_entropy(py::object dZ, py::array Z, py::array Y) {
    const int m = dim(Z, "Z", 2, 0);
    dim(Z, "Z", 2, 1);
    const py::ssize_t count = Z.size();
    return dispatch(Z, "Z", [&](auto t) {
        using T = decltype(t);
        T* pdZ = checked_opt<T>(dZ, "dZ", shape_of(Z), true);
        const T* pZ = checked<T>(Z, "Z", shape_of(Z), false);
        const T* pY = checked<T>(Y, "Y", shape_of(Z), false);
        disjoint({"dZ", pdZ, count}, {{"Z", pZ, count}, {"Y", pY, count}});
        py::gil_scoped_release nogil;
        return pydl::sigmoid_cross_entropy<T>(pdZ, pZ, pY, count, m);
    });
}

double mean_squared_error(py::object dZ, py::array Yhat, py::array Y) {
    const py::ssize_t count = nonempty_size(Yhat, "Yhat");
    return dispatch(Yhat, "Yhat", [&](auto t) {
        using T = decltype(t);
        T* pdZ = checked_opt<T>(dZ, "dZ", shape_of(Yhat), true);
        const T* pYh = checked<T>(Yhat, "Yhat", shape_of(Yhat), false);
        const T* pY = checked<T>(Y, "Y", shape_of(Yhat), false);
        disjoint({"dZ", pdZ, count}, {{"Yhat", pYh, count}, {"Y", pY, count}});
        py::gil_scoped_release nogil;
        return pydl::mean_squared_error<T>(pdZ, pYh, pY, count);
    });
}

// ---------------------------------------------------------------- dropout

void check_keep_prob(double keep_prob) {
    if (!(keep_prob > 0.0 && keep_prob <= 1.0))
        throw py::value_error("keep_prob must be in (0, 1]");
}

void dropout_forward(py::array out, py::array A, uint64_t seed, uint64_t step, uint64_t layer,
                     double keep_prob) {
    check_keep_prob(keep_prob);
    const py::ssize_t count = nonempty_size(A, "A");
    dispatch(A, "A", [&](auto t) {
        using T = decltype(t);
        T* po = checked<T>(out, "out", shape_of(A), true);
        const T* pA = checked<T>(A, "A", shape_of(A), false);
        same_or_disjoint({"out", po, count}, {"A", pA, count});
        py::gil_scoped_release nogil;
        pydl::dropout_forward<T>(po, pA, count, seed, step, layer, keep_prob);
    });
}

void dropout_backward(py::array dA, py::array dout, uint64_t seed, uint64_t step, uint64_t layer,
                      double keep_prob) {
    check_keep_prob(keep_prob);
    const py::ssize_t count = nonempty_size(dout, "dout");
    dispatch(dout, "dout", [&](auto t) {
        using T = decltype(t);
        T* pdA = checked<T>(dA, "dA", shape_of(dout), true);
        const T* pdo = checked<T>(dout, "dout", shape_of(dout), false);
        same_or_disjoint({"dA", pdA, count}, {"dout", pdo, count});
        py::gil_scoped_release nogil;
        pydl::dropout_backward<T>(pdA, pdo, count, seed, step, layer, keep_prob);
    });
}

// ---------------------------------------------------------------- optimizers

bool sgd_step(py::array theta, py::array grad, double lr, double wd, bool check) {
    const py::ssize_t count = nonempty_size(theta, "theta");
    bool finite = true;
    dispatch(theta, "theta", [&](auto t) {
        using T = decltype(t);
        T* p = checked<T>(theta, "theta", {count}, true);
        const T* g = checked<T>(grad, "grad", {count}, false);
        disjoint({"theta", p, count}, {{"grad", g, count}});
        py::gil_scoped_release nogil;
        finite = pydl::sgd_step<T>(p, g, count, T(lr), T(wd), check);
    });
    return finite;
}

bool momentum_step(py::array theta, py::array v, py::array grad, double lr, double beta,
                   bool nesterov, double wd, bool check) {
    const py::ssize_t count = nonempty_size(theta, "theta");
    bool finite = true;
    dispatch(theta, "theta", [&](auto t) {
        using T = decltype(t);
        T* p = checked<T>(theta, "theta", {count}, true);
        T* pv = checked<T>(v, "v", {count}, true);
        const T* g = checked<T>(grad, "grad", {count}, false);
        disjoint({"theta", p, count}, {{"v", pv, count}, {"grad", g, count}});
        disjoint({"v", pv, count}, {{"grad", g, count}});
        py::gil_scoped_release nogil;
        finite = pydl::momentum_step<T>(p, pv, g, count, T(lr), beta, nesterov, T(wd), check);
    });
    return finite;
}

bool rmsprop_step(py::array theta, py::array s, py::array grad, double lr, double beta, double eps,
                  double wd, bool check) {
    const py::ssize_t count = nonempty_size(theta, "theta");
    bool finite = true;
    dispatch(theta, "theta", [&](auto t) {
        using T = decltype(t);
        T* p = checked<T>(theta, "theta", {count}, true);
        T* ps = checked<T>(s, "s", {count}, true);
        const T* g = checked<T>(grad, "grad", {count}, false);
        disjoint({"theta", p, count}, {{"s", ps, count}, {"grad", g, count}});
        disjoint({"s", ps, count}, {{"grad", g, count}});
        py::gil_scoped_release nogil;
        finite = pydl::rmsprop_step<T>(p, ps, g, count, T(lr), beta, T(eps), T(wd), check);
    });
    return finite;
}

bool adam_step(py::array theta, py::array v, py::array s, py::array grad, double lr, double beta1,
               double beta2, double eps, int64_t step, double wd, bool decoupled, bool check) {
    const py::ssize_t count = nonempty_size(theta, "theta");
    if (step < 1) throw py::value_error("t must be >= 1");
    bool finite = true;
    dispatch(theta, "theta", [&](auto t) {
        using T = decltype(t);
        T* p = checked<T>(theta, "theta", {count}, true);
        T* pv = checked<T>(v, "v", {count}, true);
        T* ps = checked<T>(s, "s", {count}, true);
        const T* g = checked<T>(grad, "grad", {count}, false);
        disjoint({"theta", p, count}, {{"v", pv, count}, {"s", ps, count}, {"grad", g, count}});
        disjoint({"v", pv, count}, {{"s", ps, count}, {"grad", g, count}});
        disjoint({"s", ps, count}, {{"grad", g, count}});
        py::gil_scoped_release nogil;
        finite = pydl::adam_step<T>(p, pv, ps, g, count, T(lr), beta1, beta2, T(eps), step, T(wd),
                                    decoupled, check);
    });
    return finite;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "pydl compiled kernels; use pydl.ops, which validates arguments";
    pydl::blas_init();
    using namespace py::literals;
    m.def("dense_forward", &dense_forward, "A"_a, "A_prev"_a, "W"_a, "b"_a, "activation"_a,
          "alpha"_a, "batch_invariant"_a);
    m.def("dense_backward", &dense_backward, "dA_prev"_a, "dW"_a, "db"_a, "dZ"_a, "A"_a, "A_prev"_a,
          "W"_a, "activation"_a, "alpha"_a, "l2"_a, "l1"_a);
    m.def("activation_forward", &activation_forward, "A"_a, "Z"_a, "activation"_a, "alpha"_a);
    m.def("activation_backward", &activation_backward, "dZ"_a, "dA"_a, "A"_a, "activation"_a,
          "alpha"_a);
    m.def("weight_penalty", &weight_penalty, "W"_a, "l2"_a, "l1"_a, "m"_a);
    m.def("batchnorm_forward_train", &batchnorm_forward_train, "out"_a, "mean"_a, "invstd"_a,
          "running_mean"_a, "running_var"_a, "Z"_a, "gamma"_a, "beta"_a, "momentum"_a,
          "eps"_a, "activation"_a, "alpha"_a);
    m.def("batchnorm_forward_eval", &batchnorm_forward_eval, "out"_a, "Z"_a, "gamma"_a, "beta"_a,
          "running_mean"_a, "running_var"_a, "eps"_a, "activation"_a, "alpha"_a);
    m.def("batchnorm_backward", &batchnorm_backward, "dZ"_a, "dgamma"_a, "dbeta"_a, "dout"_a,
          "out"_a, "Z"_a, "gamma"_a, "mean"_a, "invstd"_a, "activation"_a, "alpha"_a);
    m.def("softmax_cross_entropy", &softmax_cross_entropy, "dZ"_a, "Z"_a, "labels"_a, "Y"_a);
    m.def("softmax", &softmax, "P"_a, "Z"_a);
    m.def("sigmoid_cross_entropy", &sigmoid_cross_entropy, "dZ"_a, "Z"_a, "Y"_a);
    m.def("mean_squared_error", &mean_squared_error, "dZ"_a, "Yhat"_a, "Y"_a);
    m.def("dropout_forward", &dropout_forward, "out"_a, "A"_a, "seed"_a, "step"_a, "layer"_a,
          "keep_prob"_a);
    m.def("dropout_backward", &dropout_backward, "dA"_a, "dout"_a, "seed"_a, "step"_a, "layer"_a,
          "keep_prob"_a);
    m.def("sgd_step", &sgd_step, "theta"_a, "grad"_a, "lr"_a, "weight_decay"_a, "check"_a);
    m.def("momentum_step", &momentum_step, "theta"_a, "v"_a, "grad"_a, "lr"_a, "beta"_a,
          "nesterov"_a, "weight_decay"_a, "check"_a);
    m.def("rmsprop_step", &rmsprop_step, "theta"_a, "s"_a, "grad"_a, "lr"_a, "beta"_a, "eps"_a,
          "weight_decay"_a, "check"_a);
    m.def("adam_step", &adam_step, "theta"_a, "v"_a, "s"_a, "grad"_a, "lr"_a, "beta1"_a, "beta2"_a,
          "eps"_a, "t"_a, "weight_decay"_a, "decoupled"_a, "check"_a);
    m.def("gemm_runs_own", [](int M, int N, int K, bool is_double) {
        return is_double ? pydl::gemm_runs_own<double>(M, N, K) : pydl::gemm_runs_own<float>(M, N, K);
    }, "M"_a, "N"_a, "K"_a, "is_double"_a);
    m.def("gemm_parts", &pydl::gemm_parts, "M"_a, "N"_a, "K"_a);
    m.def("gemm_bands_run", &pydl::gemm_bands_run);
    m.def("hold_gemm_bands", &pydl::hold_gemm_bands, "n"_a);
    m.def("blas_library", [] { return pydl::blas_library(); });
    m.def("pin_blas_threads", &pydl::pin_blas_threads);
    m.def("set_blas_pool", &pydl::set_blas_pool, "n"_a);
    m.def("blas_core", [] { return pydl::blas_core(); });
    m.def("force_gemm_kernel", &pydl::force_gemm_kernel, "kernel"_a);
    m.attr("own_gemm_vector_bytes") = pydl::own_gemm_vector_bytes();
    m.def("set_num_threads", &pydl::set_omp_threads, "n"_a);
    m.def("get_num_threads", &pydl::get_omp_threads);
    m.def("set_stream_threshold", &pydl::set_stream_threshold, "nbytes"_a);
    m.def("get_stream_threshold", &pydl::get_stream_threshold);
    m.def("get_panel_shape", &pydl::get_panel_shape);
    m.def("force_panel_shape", &pydl::force_panel_shape, "bytes"_a, "prefetch"_a, "by_columns"_a);
    m.def("scratch_growth_count", &pydl::scratch_growth_count);
    m.def("fail_scratch_growths", &pydl::fail_scratch_growths, "count"_a);
#ifdef PYDL_HAVE_OPENMP
    m.attr("has_openmp") = true;
#else
    m.attr("has_openmp") = false;
#endif
}
