// Shared helpers for pydl kernels.
// m = batch size, n_in = input features, n_out = output features, n = features of a
// layer, C = classes. Every matrix is row-major (C order); weights are (n_out, n_in).
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#ifdef PYDL_HAVE_OPENMP
#include <omp.h>
#endif

namespace pydl {

enum class Activation : int { identity = 0, relu = 1, leaky_relu = 2, tanh = 3, sigmoid = 4 };

// Below this much work a kernel stays on one thread: waking a sleeping team (pydl sets
// OMP_WAIT_POLICY=PASSIVE so that idle OpenMP threads leave the cores to other pools)
// costs 50-100 us on a 2-core VM, as long as 2^18-2^19 cheap elements take on one core.
// Work = elements x a kernel's cost per element: 1 for adds and compares (relu, SGD,
// softmax: break-even 2^18-2^19 elements), 2 for two passes or a vectorized exp, sqrt or
// division per element (batch norm, Adam, RMSprop, tanh, sigmoid), 4 for a hash or libm
// call per element (dropout, sigmoid cross-entropy: break-even ~2^17).
// (bench/threads_interference.py elementwise.)
constexpr std::ptrdiff_t kParallelMinWork = std::ptrdiff_t(1) << 19;

inline bool worth_parallel(std::ptrdiff_t count, int cost) {
    return count >= kParallelMinWork / cost;
}

template <Activation act>
constexpr int activation_cost = act == Activation::tanh || act == Activation::sigmoid ? 2 : 1;

// exp(x) that vectorizes (libm's expf does not without -ffast-math). float: Cody-Waite
// reduction x = n ln2 + r, |r| <= ln2/2, a degree-6 polynomial for e^r (the Cephes expf
// coefficients, ~1 ulp) and 2^n put into the exponent bits; x is clamped to the normal
// range, NaN stays NaN. double: std::exp (gradient checks want the last bits).
inline float exp_vec(float x0) {
    float x = x0 > -87.33654f ? x0 : -87.33654f;  // also maps NaN here; restored below
    x = x < 88.37626f ? x : 88.37626f;
    const float n = std::floor(x * 1.44269504088896341f + 0.5f);
    const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    const float y = p * r * r + r + 1.0f;
    const float scale = __builtin_bit_cast(float, (int32_t(n) + 127) << 23);
    const float e = x0 < -87.33654f ? 0.0f : y * scale;  // underflow to 0 like expf
    return x0 != x0 ? x0 : e;
}

inline double exp_vec(double x) { return std::exp(x); }

// tanh(x) that vectorizes (libm's tanhf does not: 16 ns per element). float: for |x| < 0.625
// the odd polynomial x + x^3 P(x^2) of Cephes' tanhf (~1 ulp); above, 1 - 2/(e^{2|x|} + 1)
// through exp_vec (the difference is >= 0.55, so no cancellation); the sign of x (and -0,
// NaN) carried over. double: std::tanh (gradient checks want the last bits).
inline float tanh_vec(float x) {
    const float ax = std::fabs(x);
    const float z = ax * ax;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    const float small = p * z * ax + ax;
    const float large = 1.0f - 2.0f / (exp_vec(2.0f * ax) + 1.0f);
    return std::copysign(ax < 0.625f ? small : large, x);
}

inline double tanh_vec(double x) { return std::tanh(x); }

// 1 / (1 + e^{-z}) that vectorizes. float: with e = e^{-|z|} in (0, 1], 1/(1 + e) for
// z >= 0 and e/(1 + e) below (no overflow; 0 below z = -87.3, where the result would be
// subnormal: < 2^-126 off). double: std::exp.
inline float sigmoid_vec(float z) {
    const float e = exp_vec(-std::fabs(z));
    const float r = 1.0f / (1.0f + e);
    return z >= 0.0f ? r : e * r;
}

inline double sigmoid_vec(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// a = g(z), with the activation a compile-time constant so loops stay branch-free.
template <Activation act, class T>
inline T activate(T z, T alpha) {
    // relu: written so that NaN propagates (z > 0 ? z : 0 turned NaN into 0 and hid a
    // diverged network from the loss); as np.maximum(z, 0) and torch.relu.
    if constexpr (act == Activation::relu)
        return z < T(0) ? T(0) : z;
    else if constexpr (act == Activation::leaky_relu)
        return z > T(0) ? z : alpha * z;
    else if constexpr (act == Activation::tanh)
        return tanh_vec(z);
    else if constexpr (act == Activation::sigmoid)
        return sigmoid_vec(z);
    else
        return z;
}

// g'(z) written in terms of a = g(z), so backward never needs Z.
// leaky_relu needs alpha > 0 so that a > 0 exactly when z > 0.
template <Activation act, class T>
inline T activation_grad(T a, T alpha) {
    if constexpr (act == Activation::relu)
        return a > T(0) ? T(1) : T(0);
    else if constexpr (act == Activation::leaky_relu)
        return a > T(0) ? T(1) : alpha;
    else if constexpr (act == Activation::tanh)
        return T(1) - a * a;
    else if constexpr (act == Activation::sigmoid)
        return a * (T(1) - a);
    else
        return T(1);
}


// A row's tail of r < 16 values goes as one 16-lane vector, through a masked load, for float
// with AVX-512 when r >= 4. (Loops of a variable count under 16 ran scalar, and a
// reduction's epilogue went through the stack: a row of 10 classes took ~100 ns. A shorter
// tail, or double, whose exp_vec is std::exp, goes element by element.)
#ifdef __AVX512F__
template <class T>
constexpr bool kVectorTail = std::is_same_v<T, float>;

// t = z[0, r) then `fill` up to 16; lanes [r, 16) of z are never read.
inline void tail16(float (&t)[16], const float* z, int r, float fill) {
    const __mmask16 keep = __mmask16((1u << r) - 1);
    _mm512_storeu_ps(t, _mm512_mask_loadu_ps(_mm512_set1_ps(fill), keep, z));
}
#else
template <class T>
constexpr bool kVectorTail = false;
#endif

// max_j z[j] over j < n (n >= 1), vectorized. A NaN (never the max by this comparison)
// may be dropped; then exp of the NaN makes the row's sum NaN anyway.
template <class T>
inline T row_max(const T* z, int n) {
    T zmax = z[0];
    const int body = n - n % 16;
#pragma omp simd reduction(max : zmax)
    for (int j = 0; j < body; ++j) zmax = z[j] > zmax ? z[j] : zmax;
    if constexpr (kVectorTail<T>) {
        if (n - body >= 4) {
            T t[16];
            tail16(t, z + body, n - body, zmax);
            for (int l = 0; l < 16; ++l) zmax = t[l] > zmax ? t[l] : zmax;
            return zmax;
        }
    }
    for (int j = body; j < n; ++j) zmax = z[j] > zmax ? z[j] : zmax;
    return zmax;
}

// out[j] = exp_vec(z[j] - shift) for j < n; returns their sum: 16 lanes in T (column l of
// the row seen as rows of 16), then added pairwise in double. Every step is in a fixed
// order, so that the loops vectorize without reassociating a reduction.
template <class T>
inline double exp_shifted_sum(T* __restrict out, const T* __restrict z, int n, T shift) {
    const int body = n - n % 16, r = n - body;
    T lanes[16] = {};
    for (int j = 0; j < body; ++j) out[j] = exp_vec(z[j] - shift);
    for (int j = 0; j < body; j += 16)
        for (int l = 0; l < 16; ++l) lanes[l] += out[j + l];
    bool tail_done = false;
    if constexpr (kVectorTail<T>) {
        if (r >= 4) {
            T t[16];
            tail16(t, z + body, r, shift);
            for (int l = 0; l < 16; ++l) t[l] = exp_vec(t[l] - shift);
            for (int l = 0; l < 16; ++l) lanes[l] += l < r ? t[l] : T(0);
            for (int l = 0; l < r; ++l) out[body + l] = t[l];
            tail_done = true;
        }
    }
    if (!tail_done)
        for (int l = 0; l < r; ++l) lanes[l] += out[body + l] = exp_vec(z[body + l] - shift);
    double s[8];
    for (int l = 0; l < 8; ++l) s[l] = double(lanes[l]) + double(lanes[l + 8]);
    for (int w = 4; w >= 1; w /= 2)
        for (int l = 0; l < w; ++l) s[l] += s[l + w];
    return s[0];
}

template <Activation A>
using ActTag = std::integral_constant<Activation, A>;

// Calls f(ActTag<act>{}) so that the body is compiled once per activation.
template <class F>
inline void with_activation(Activation act, F&& f) {
    switch (act) {
        case Activation::relu:
            f(ActTag<Activation::relu>{});
            break;
        case Activation::leaky_relu:
            f(ActTag<Activation::leaky_relu>{});
            break;
        case Activation::tanh:
            f(ActTag<Activation::tanh>{});
            break;
        case Activation::sigmoid:
            f(ActTag<Activation::sigmoid>{});
            break;
        default:
            f(ActTag<Activation::identity>{});
            break;
    }
}

// Kernel bodies handed to parallel_for are kept out of line: GCC with -fopenmp vectorizes
// the copy outlined into the parallel region but left the copy inlined into the serial
// path scalar (Adam ran at 2 ns/element instead of 0.2).
#define PYDL_NOINLINE __attribute__((noinline))

// Thread id's share [b, e) of n items among nt threads, as parallel_for cuts them.
inline std::pair<std::ptrdiff_t, std::ptrdiff_t> thread_range(std::ptrdiff_t n, std::ptrdiff_t nt,
                                                              std::ptrdiff_t id) {
    std::ptrdiff_t chunk = (n + nt - 1) / nt;
    if (chunk > 16) chunk = (chunk + 15) & ~std::ptrdiff_t(15);
    const std::ptrdiff_t b = id * chunk < n ? id * chunk : n;
    return {b, b + chunk < n ? b + chunk : n};
}

// The thread count set by pydl.set_num_threads, for every calling thread (0: OpenMP's
// default). omp_set_num_threads would set it for the calling thread only: a kernel called
// from another Python thread (a server's, Dask's) would run on the default count.
inline std::atomic<int>& thread_count() {
    static std::atomic<int> count{0};
    return count;
}

inline int max_threads() {
#ifdef PYDL_HAVE_OPENMP
    const int n = thread_count().load(std::memory_order_relaxed);
    return n > 0 ? n : omp_get_max_threads();
#else
    return 1;
#endif
}

// Within its scope, this thread's SSE/AVX arithmetic flushes subnormal results to 0 (FTZ)
// and reads subnormal operands as 0 (DAZ); the caller's mode comes back after. An Intel core
// takes an assist of ~100 cycles for a subnormal operand or result (optim.cpp). Construct it
// outside the (non-inlined) loops it covers: a call is a point the compiler cannot move
// arithmetic across. No effect off x86 (ARM cores take subnormals at full speed).
class FlushSubnormals {
#if defined(__SSE2__)
    const unsigned saved_ = _mm_getcsr();

public:
    FlushSubnormals() { _mm_setcsr(saved_ | 0x8040u); }  // FTZ (bit 15) | DAZ (bit 6)
    ~FlushSubnormals() { _mm_setcsr(saved_); }
#else
public:
    FlushSubnormals() {}
#endif
    FlushSubnormals(const FlushSubnormals&) = delete;
    FlushSubnormals& operator=(const FlushSubnormals&) = delete;
};

// ---- Scratch memory.
// A kernel's small working arrays (per-feature sums, partial sums, a packed panel) live in
// scratch buffers, so that no kernel allocates inside a training step once buffers exist.
// Each thread that calls kernels (they release the GIL, so Python threads may run them at
// once) keeps one 64-byte-aligned buffer per Scratch slot, grows it to the largest request
// so far (at least 1.5x at a time) and keeps it for its life (a batch norm over 65536
// features on one thread keeps ~16 MB). A kernel takes its buffers before its parallel
// region, whose threads share them; own_gemm, which runs on each worker of gemm_rows, has
// each worker's own pack. A slot holds what its last user left there. Slots that are
// in use at the same time differ: sums (a kernel's per-feature totals), coef (its
// per-feature coefficients), parts (a reduction's partial sums), pack (own_gemm's panel).
enum class Scratch : int { sums, coef, parts, pack, count };

// How many times a scratch buffer has grown, over all threads (tests: none in a step).
inline std::atomic<long long>& scratch_growths() {
    static std::atomic<long long> count{0};
    return count;
}

// For tests: this many of the next growths, on any thread, throw std::bad_alloc as if the
// allocation had failed (a worker thread's failure must reach Python as MemoryError).
inline std::atomic<int>& scratch_failures() {
    static std::atomic<int> count{0};
    return count;
}

struct ScratchBuffer {
    void* data = nullptr;
    std::size_t bytes = 0;
    ~ScratchBuffer() { ::operator delete(data, std::align_val_t(64)); }
};

inline ScratchBuffer& scratch_buffer(Scratch slot) {
    thread_local ScratchBuffer buffers[int(Scratch::count)];
    return buffers[int(slot)];
}

// Frees this thread's buffer of `slot`: after a one-off request far larger than what the
// slot's kernels ask for (blas.cpp, prime_blas), which is not kept for the thread's life.
inline void scratch_release(Scratch slot) {
    ScratchBuffer& b = scratch_buffer(slot);
    ::operator delete(b.data, std::align_val_t(64));
    b.data = nullptr;
    b.bytes = 0;
}

inline void* scratch_bytes(Scratch slot, std::size_t bytes) {
    ScratchBuffer& b = scratch_buffer(slot);
    if (bytes > b.bytes) {
        const std::size_t grown = std::max(bytes, b.bytes + b.bytes / 2);
        for (int left = scratch_failures().load(); left > 0;)
            if (scratch_failures().compare_exchange_weak(left, left - 1)) throw std::bad_alloc();
        void* data = ::operator new(grown, std::align_val_t(64));  // may throw bad_alloc
        ::operator delete(b.data, std::align_val_t(64));
        b.data = data;
        b.bytes = grown;
        scratch_growths().fetch_add(1, std::memory_order_relaxed);
    }
    return b.data;
}

// count uninitialized T's of `slot`'s buffer.
template <class T>
inline T* scratch(Scratch slot, std::size_t count) {
    static_assert(std::is_trivially_copyable_v<T>);
    return static_cast<T*>(scratch_bytes(slot, count * sizeof(T)));
}

// Runs body(nt, id) on each of the nt threads of a parallel region (once, as (1, 0),
// without OpenMP). An exception thrown by body on any thread (std::bad_alloc from a
// worker's scratch) is rethrown on the calling thread after the region, the first one if
// several threads throw: leaving an OpenMP region by an exception would terminate the
// process. A body that meets its team at a barrier (panel_passes) must not throw between
// barriers; those bodies take no memory.
// A kernel that sizes per-thread memory by the thread count passes the count it read,
// `threads`: the team has at most that many threads even if pydl.set_num_threads changes
// the count meanwhile (from another Python thread).
template <class F>
inline void in_team(int threads, F&& body) {
#ifdef PYDL_HAVE_OPENMP
    std::exception_ptr error;
    std::atomic<bool> failed{false};
#pragma omp parallel num_threads(threads)
    {
        try {
            body(omp_get_num_threads(), omp_get_thread_num());
        } catch (...) {
            if (!failed.exchange(true)) error = std::current_exception();
        }
    }
    if (error) std::rethrow_exception(error);
#else
    (void)threads;
    body(1, 0);
#endif
}

template <class F>
inline void in_team(F&& body) {
    in_team(max_threads(), std::forward<F>(body));
}

// Runs body(begin, end) over [0, n) split into one contiguous range per thread when
// `parallel` (and OpenMP is on with more than one thread), else as one serial call.
// The serial path stays outside any OpenMP construct: an `omp parallel ... if(false)`
// region still outlines the loop and blocks its vectorization (10x slower for small
// arrays). Ranges are rounded to multiples of 16 items.
template <class F>
inline void parallel_for(std::ptrdiff_t n, bool parallel, F&& body) {
    if (parallel && n > 1 && max_threads() > 1) {
        in_team([&](int nt, int id) {
            const auto [b, e] = thread_range(n, nt, id);
            if (b < e) body(b, e);
        });
        return;
    }
    if (n > 0) body(std::ptrdiff_t(0), n);
}

// A barrier for the threads of one parallel region: spin, then sleep. An OpenMP barrier
// under OMP_WAIT_POLICY=PASSIVE (pydl's default, so that idle OpenMP threads leave the
// cores to other pools) sleeps at once and costs a wake-up of 10-100 us on a VM; the
// panel passes below meet at barriers dozens of times per call, usually within tens of
// microseconds of each other, so the early thread spins for up to kBarrierSpins pauses
// (~50 us) first. It must then sleep, not yield: when another process holds the partner's
// core, a thread that keeps its own core busy stops the scheduler from moving the partner
// there, and each barrier waits out a time slice (a batch-norm call took 50 ms instead of
// 5). From the second wait that has had to sleep on, later waits on the same barrier spin
// only kBarrierSpinsContended pauses (~5 us): the machine is busy. (Switching after the
// first sleep cost 10% on an idle machine, where a thread is now and then that late.)
constexpr int kBarrierSpins = 2000;
constexpr int kBarrierSpinsContended = 200;

class TeamBarrier {
public:
    void wait(int nt) {
        const unsigned gen = gen_.load();
        if (count_.fetch_add(1) == nt - 1) {
            count_.store(0, std::memory_order_relaxed);
            gen_.fetch_add(1);
            // sleepers_ is read after gen_ changes and raised before gen_ is checked (both
            // sequentially consistent), so a sleeper either sees the new generation or is
            // seen here and woken.
            if (sleepers_.load() > 0) {
                std::lock_guard<std::mutex> lock(mutex_);
                wake_.notify_all();
            }
            return;
        }
        const int spins = spins_.load(std::memory_order_relaxed);
        for (int spin = 0; spin < spins; ++spin) {
            if (gen_.load(std::memory_order_acquire) != gen) return;
            cpu_relax();
        }
        if (sleeps_.fetch_add(1, std::memory_order_relaxed) >= 1)
            spins_.store(kBarrierSpinsContended, std::memory_order_relaxed);
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1);
        wake_.wait(lock, [&] { return gen_.load() != gen; });
        sleepers_.fetch_sub(1);
    }

private:
    static void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
        _mm_pause();
#elif defined(__aarch64__)
        asm volatile("yield");
#endif
    }
    std::atomic<int> count_{0};
    std::atomic<unsigned> gen_{0};
    std::atomic<int> sleepers_{0};
    std::atomic<int> spins_{kBarrierSpins};
    std::atomic<int> sleeps_{0};
    std::mutex mutex_;
    std::condition_variable wake_;
};

// ---- Streaming (non-temporal) stores.
// An output that, with the kernel's inputs, is too large to stay in the last-level cache is
// written around the caches: no read for ownership of its lines, and it does not evict the
// inputs that the kernel's second pass reads again. The threshold is 3/4 of the last-level
// cache (of at most 32 MB of it: stream_min_bytes), where glibc's memcpy also switches to
// non-temporal stores.

// Size in bytes of CPU 0's data or unified cache of `level` (0: the largest of any level),
// from Linux's sysfs (what lscpu reports); 0 when sysfs does not say.
inline std::size_t cache_bytes(int level) {
    std::size_t best = 0;
    for (int index = 0; index < 8; ++index) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
        if (level > 0) {
            std::FILE* f = std::fopen((dir + "/level").c_str(), "r");
            if (f == nullptr) continue;
            int got_level = 0;
            const bool ok = std::fscanf(f, "%d", &got_level) == 1;
            std::fclose(f);
            if (!ok || got_level != level) continue;
            if ((f = std::fopen((dir + "/type").c_str(), "r")) != nullptr) {
                char type[32] = {0};
                const bool typed = std::fscanf(f, "%31s", type) == 1;
                std::fclose(f);
                if (typed && std::strcmp(type, "Instruction") == 0) continue;
            }
        }
        std::FILE* f = std::fopen((dir + "/size").c_str(), "r");
        if (f == nullptr) continue;
        unsigned long long v = 0;
        char unit = 0;
        const int got = std::fscanf(f, "%llu%c", &v, &unit);
        std::fclose(f);
        if (got < 1) continue;
        if (got == 2 && (unit == 'K' || unit == 'k')) v <<= 10;
        if (got == 2 && (unit == 'M' || unit == 'm')) v <<= 20;
        if (v > best) best = std::size_t(v);
    }
    return best;
}

// Size in bytes of the largest cache of CPU 0: sysfs, else sysconf, else 32 MB. (glibc's
// sysconf can report a whole host's L3 inside a VM.)
inline std::size_t last_level_cache_bytes() {
    std::size_t best = cache_bytes(0);
#ifdef _SC_LEVEL3_CACHE_SIZE
    if (best == 0) {
        long llc = sysconf(_SC_LEVEL3_CACHE_SIZE);
        if (llc <= 0) llc = sysconf(_SC_LEVEL2_CACHE_SIZE);
        if (llc > 0) best = std::size_t(llc);
    }
#endif
    return best > 0 ? best : std::size_t(32) << 20;
}

// The cache counted on is at most kStreamMaxCache: a VM's sysfs may report its host's whole
// L3, most of which other tenants use (300 MB on the Intel VM, where batch norm over 4096 x
// 1024 float took 6.5 ms with cached outputs and 4.2 ms with streamed ones).
constexpr std::size_t kStreamMaxCache = std::size_t(32) << 20;

inline std::atomic<std::size_t>& stream_min_bytes() {
    static std::atomic<std::size_t> bytes{
        std::min(last_level_cache_bytes(), kStreamMaxCache) / 4 * 3};
    return bytes;
}

// Whether a kernel that touches `footprint` bytes should write its output with
// non-temporal stores.
inline bool stream_output(double footprint) {
#if defined(__SSE2__)
    return footprint >= double(stream_min_bytes().load(std::memory_order_relaxed));
#else
    (void)footprint;
    return false;
#endif
}

// dst[0, w) = src[0, w), the whole 64-byte lines of dst with non-temporal stores.
template <class T>
inline void stream_copy(T* __restrict dst, const T* __restrict src, int w) {
    int j = 0;
#if defined(__SSE2__)
    constexpr int kLine = int(64 / sizeof(T));
    for (; j < w && (reinterpret_cast<std::uintptr_t>(dst + j) & 63) != 0; ++j) dst[j] = src[j];
    for (; j + kLine <= w; j += kLine) {
        if constexpr (std::is_same_v<T, float>) {
#if defined(__AVX512F__)
            _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
#else
            for (int q = 0; q < 16; q += 4) _mm_stream_ps(dst + j + q, _mm_loadu_ps(src + j + q));
#endif
        } else {
#if defined(__AVX512F__)
            _mm512_stream_pd(dst + j, _mm512_loadu_pd(src + j));
#else
            for (int q = 0; q < 8; q += 2) _mm_stream_pd(dst + j + q, _mm_loadu_pd(src + j + q));
#endif
        }
    }
#endif
    for (; j < w; ++j) dst[j] = src[j];
}

// Orders this thread's non-temporal stores before what it does next (a barrier, the end of
// the parallel region), after which other threads may read the output.
inline void stream_fence() {
#if defined(__SSE2__)
    _mm_sfence();
#endif
}

// Writes columns [0, w) of `rows` rows of dst (row stride ld) through
// fill(o, ldo, c0, len), which sets o[r * ldo + c] for r < rows, c < len to the values of
// row r, column c0 + c: straight into dst, or when STREAM into a buffer in L1 that is then
// copied out with non-temporal stores. rows is at most kMaxWriteRows (an int or an
// std::integral_constant).
constexpr int kMaxWriteRows = 4;

template <bool STREAM, class T, class Rows, class Fill>
inline void write_rows(T* dst, std::ptrdiff_t ld, Rows rows, int w, Fill&& fill) {
    if constexpr (STREAM) {
        constexpr int kChunk = 256;
        alignas(64) T buf[kMaxWriteRows * kChunk];
        for (int c0 = 0; c0 < w; c0 += kChunk) {
            const int len = w - c0 < kChunk ? w - c0 : kChunk;
            fill(buf, std::ptrdiff_t(kChunk), c0, len);
            for (int r = 0; r < rows; ++r)
                stream_copy(dst + r * ld + c0, static_cast<const T*>(buf + r * kChunk), len);
        }
    } else {
        fill(dst, ld, 0, w);
    }
}

// fn(i, rows) for blocks of rows [r0, r1) from the last: whole blocks of kMaxWriteRows
// rows (rows an std::integral_constant, so that the compiler unrolls them), then single
// rows. The rows a pass read last are the first to be read again (still in cache).
template <class Fn>
inline void for_row_blocks_down(int r0, int r1, Fn&& fn) {
    int top = r1;
    for (; top - r0 >= kMaxWriteRows; top -= kMaxWriteRows)
        fn(top - kMaxWriteRows, std::integral_constant<int, kMaxWriteRows>{});
    for (; top > r0; --top) fn(top - 1, std::integral_constant<int, 1>{});
}

// ---- Column sums over the batch and an elementwise pass that uses them.
// Per-column reductions (db, BatchNorm statistics) whose bits do not depend on the number of
// threads: rows are cut into a fixed number of chunks (a function of m only); a tile is a
// chunk's rows times some columns, reduced by one thread in row order into the chunk's
// partial sums, and the partials are added in chunk order. Each column is summed on its own
// (vector lanes are columns), so which columns share a tile changes no bit.
//
//   tile(i0, i1, j0, w, acc, stride): add the K sums of rows [i0, i1), columns [j0, j0 + w)
//     into acc[k * stride + j - j0] (zero on entry);
//   finish(j0, j1, s, stride): columns [j0, j1) are complete; the k-th sum of column j is
//     s[k * stride + j - j0];
//   rows(r0, r1, j0, w, 0): then the elementwise pass over rows [r0, r1), columns
//     [j0, j0 + w), or NoRows{} for none.
constexpr int kReduceBlock = 1024;
constexpr int kReduceRowsPerChunk = 128;
constexpr int kReduceMaxChunks = 16;

struct NoRows {
    void operator()(int, int, int, int, int) const {}
};

// sum over c of part[c * chunk_stride + i], in chunk order (the same bits for any threads).
inline double chunk_total(const double* part, int nchunks, std::ptrdiff_t chunk_stride,
                          std::ptrdiff_t i) {
    double s = 0.0;
    for (int c = 0; c < nchunks; ++c) s += part[c * chunk_stride + i];
    return s;
}

inline int reduce_chunks(int m) {
    const std::ptrdiff_t c = (std::ptrdiff_t(m) + kReduceRowsPerChunk - 1) / kReduceRowsPerChunk;
    return int(c < 1 ? 1 : (c > kReduceMaxChunks ? kReduceMaxChunks : c));
}

// All columns at once: tiles of one chunk times kReduceBlock columns (4 KB of float per
// row, one sequential stream for the prefetcher) shared out among the threads, the totals
// and finish on thread 0, then the rows split evenly.
template <int K, class Tile, class Finish, class Rows>
inline void column_passes(int m, int n, bool parallel, double* sums, Tile&& tile, Finish&& finish,
                          Rows&& rows) {
    // (64-bit index arithmetic throughout: m and n may each be up to INT_MAX)
    const std::ptrdiff_t nchunks = reduce_chunks(m);
    const std::ptrdiff_t chunk_rows = (std::ptrdiff_t(m) + nchunks - 1) / nchunks;
    const std::ptrdiff_t nblocks = (std::ptrdiff_t(n) + kReduceBlock - 1) / kReduceBlock;
    const std::ptrdiff_t stride = std::ptrdiff_t(K) * n;  // one chunk's partials
    double* const part =
        nchunks > 1 ? scratch<double>(Scratch::parts, std::size_t(nchunks) * std::size_t(stride))
                    : nullptr;
    double* const base = nchunks > 1 ? part : sums;
    constexpr bool has_rows = !std::is_same_v<std::decay_t<Rows>, NoRows>;
    TeamBarrier barrier;
    auto body = [&](int nt, int id) PYDL_NOINLINE {
        const std::ptrdiff_t ntiles = nchunks * nblocks;  // chunk-major: contiguous rows
        const std::ptrdiff_t t0 = ntiles * id / nt, t1 = ntiles * (id + 1) / nt;
        for (std::ptrdiff_t t = t0; t < t1; ++t) {
            const std::ptrdiff_t c = t / nblocks, j0 = (t % nblocks) * kReduceBlock;
            const std::ptrdiff_t i0 = c * chunk_rows;
            const std::ptrdiff_t i1 = i0 + chunk_rows < m ? i0 + chunk_rows : m;
            const int w = int(n - j0 < kReduceBlock ? n - j0 : kReduceBlock);
            double* acc = base + c * stride + j0;
            for (int k = 0; k < K; ++k)
                for (int j = 0; j < w; ++j) acc[std::ptrdiff_t(k) * n + j] = 0.0;
            if (i0 < i1) tile(int(i0), int(i1), int(j0), w, acc, std::ptrdiff_t(n));
        }
        // Barriers only inside a team: the serial path may run inside a caller's own
        // parallel region.
        if (nt > 1) barrier.wait(nt);
        if (id == 0) {
            if (nchunks > 1)
                for (std::ptrdiff_t k = 0; k < stride; ++k)
                    sums[k] = chunk_total(part, int(nchunks), stride, k);
            finish(0, n, static_cast<const double*>(sums), std::ptrdiff_t(n));
        }
        if constexpr (has_rows) {
            if (nt > 1) barrier.wait(nt);
            const int r0 = int(std::ptrdiff_t(m) * id / nt);
            const int r1 = int(std::ptrdiff_t(m) * (id + 1) / nt);
            if (r0 < r1) rows(r0, r1, 0, n, 0);
        }
    };
    if (parallel && max_threads() > 1)
        in_team(body);
    else
        body(1, 0);
}

// The partial sums of chunks [c0, c1) of a panel (columns [j0, j0 + w)) into part, K * stride
// per chunk (zeroed first): tile(i0, i1, j0, w, acc, stride) over each chunk's rows.
template <int K, class Tile>
inline void sum_chunks(int m, std::ptrdiff_t chunk_rows, int c0, int c1, int j0, int w,
                       double* part, std::ptrdiff_t stride, Tile&& tile) {
    for (int c = c0; c < c1; ++c) {
        double* acc = part + std::size_t(c) * K * stride;
        for (std::ptrdiff_t k = 0; k < K * stride; ++k) acc[k] = 0.0;
        const std::ptrdiff_t i0 = c * chunk_rows;
        const std::ptrdiff_t i1 = std::min<std::ptrdiff_t>(m, i0 + chunk_rows);
        if (i0 < i1) tile(int(i0), int(i1), j0, w, acc, stride);
    }
}

// total[k * stride + j] = the chunks' k-th sums of column j, in chunk order, for j in [f0, f1).
template <int K>
inline void chunk_totals(const double* part, int nchunks, std::ptrdiff_t stride, int f0, int f1,
                         double* total) {
    for (int k = 0; k < K; ++k)
        for (int j = f0; j < f1; ++j)
            total[k * stride + j] = chunk_total(part, nchunks, K * stride, k * stride + j);
}

// Columns before the first 64-byte boundary of every row of the (m, n) array at `align`,
// when all rows start at the same offset in a cache line; else 0.
inline int row_head(int n, const void* align, std::size_t itemsize) {
    const std::uintptr_t addr = reinterpret_cast<std::uintptr_t>(align);
    if ((std::size_t(n) * itemsize) % 64 != 0 || addr % itemsize != 0) return 0;
    return int(((64 - addr % 64) % 64) / itemsize);
}

// The same contract, for batches with many rows (a whole number of chunks per thread), one column
// panel at a time: the threads sum the panel's chunks, finish its columns (split among
// them), then each passes over the rows of its own chunks, last row first, finding the
// panel it has just read still in its L2 cache instead of streaming the batch in again.
// A panel's boundaries fall on the 64-byte boundaries of the rows of `align` (the output)
// when all its rows start at the same offset in a cache line.
//   rows(r0, r1, j0, w, w_next): as above; w_next > 0: prefetch that many columns from
//   j0 + w (the next panel's) while passing over a row.
//
// The panels follow the size of CPU 0's L2 cache as sysfs reports it (shared with other
// CPUs or not; bench/README.md, "Batch norm panels"):
// - below 1 MB, or unknown (AMD EPYC Zen 1 VM, 512 KB per core, 8 MB L3): panels of 2048
//   bytes of each row shared by the threads, no software prefetch. Measured there against
//   the 512-byte prefetched panels in one process: 1.11x at 1024 x 4096 float, 1.71x at
//   4096 x 1024 (whose 4 KB rows then take no panels), 1.29x at 2048 x 2048; from 1024
//   bytes up, prefetching made the same panels slower;
// - from 1 MB to below 2 MB (AMD EPYC VM with AVX-512, 1 MB per core): panels of 512 bytes
//   of each row shared by the threads (panel_passes), the rows pass prefetching the
//   thread's rows of the next panel, so that memory keeps streaming while it runs (a
//   thread's share of a 1024-row panel on 2 threads, 512 rows, is 256 KB, as is its share
//   of the next panel);
// - from 2 MB (Intel Emerald Rapids VM, 2 MB per core): each thread its own columns in
//   panels of 4096 bytes (split_passes), no software prefetch. There, software prefetches
//   of 8 lines a row held L1's fill buffers through the mesh's long L3 latency: 512-byte
//   prefetched panels were slower than no panels (1024 x 4096 float: forward 2.8 ms,
//   1.6 ms in shared 2048-byte panels, 1.8 ms without); and split_passes, without the
//   shared panels' barriers, is 1.08-1.16x faster again (with the outputs streamed).
struct PanelShape {
    int bytes;
    bool prefetch;
    bool by_columns;  // split_passes (each thread its own columns), else panel_passes
};

// 0: the rule above; else a forced shape for tests, bytes | prefetch | by_columns << 1
// (threads.cpp).
inline std::atomic<int>& forced_panel_shape() {
    static std::atomic<int> code{0};
    return code;
}

inline PanelShape panel_shape() {
    static const PanelShape rule = [] {
        const std::size_t l2 = cache_bytes(2);
        if (l2 >= (std::size_t(2) << 20)) return PanelShape{4096, false, true};
        if (l2 >= (std::size_t(1) << 20)) return PanelShape{512, true, false};
        return PanelShape{2048, false, false};
    }();
    const int forced = forced_panel_shape().load(std::memory_order_relaxed);
    return forced == 0 ? rule : PanelShape{forced & ~63, (forced & 1) != 0, (forced & 2) != 0};
}

// Whether a batch goes in panels of `shape` on nt threads.
// - Shared panels: each thread takes whole row chunks, so they must divide evenly among the
//   threads (with 3 chunks on 2 threads one would do twice the rows and the other wait at
//   every panel), and a row must hold at least 4 panels.
// - By columns: each thread's share of a row must be at least kSplitMinBytes; shorter runs
//   make short streams for the prefetchers, and a thread's panel grows tall (4096 x 1024
//   float on 2 threads: 7.0 ms by columns, 6.5 ms with all columns at once).
constexpr std::size_t kSplitMinBytes = 4096;

inline bool use_panels(int m, int n, std::size_t itemsize, int nt, const PanelShape& shape) {
    const std::size_t row_bytes = std::size_t(n) * itemsize;
    if (nt < 2) return false;
    if (shape.by_columns) return row_bytes >= std::size_t(nt) * kSplitMinBytes;
    return reduce_chunks(m) % nt == 0 && row_bytes >= 4 * std::size_t(shape.bytes);
}

// Brings p[0, len) towards the cache ahead of its use.
template <class T>
inline void prefetch_span(const T* p, int len) {
    for (int j = 0; j < len; j += int(64 / sizeof(T))) __builtin_prefetch(p + j);
}

template <int K, class Tile, class Finish, class Rows>
inline void panel_passes(int m, int n, const void* align, std::size_t itemsize,
                         const PanelShape& shape, Tile&& tile, Finish&& finish, Rows&& rows) {
    const int nchunks = reduce_chunks(m);
    const std::ptrdiff_t chunk_rows = (std::ptrdiff_t(m) + nchunks - 1) / nchunks;
    const int width = int(std::size_t(shape.bytes) / itemsize);
    const int head = row_head(n, align, itemsize);
    const std::ptrdiff_t stride = width + int(64 / itemsize);  // the first panel has head more
    double* const part = scratch<double>(Scratch::parts,  // + the totals
                                         std::size_t(nchunks + 1) * K * stride);
    double* const total = part + std::size_t(nchunks) * K * stride;
    auto panel_end = [&](std::ptrdiff_t j0) {
        return std::min<std::ptrdiff_t>(n, (j0 == 0 ? head : j0) + width);
    };
    TeamBarrier barrier;
    in_team([&](int nt, int id) {
        const int c0 = nchunks * id / nt, c1 = nchunks * (id + 1) / nt;  // this thread's chunks
        const int r0 = int(std::min<std::ptrdiff_t>(m, c0 * chunk_rows));
        const int r1 = int(std::min<std::ptrdiff_t>(m, c1 * chunk_rows));
        for (std::ptrdiff_t j0 = 0; j0 < n;) {
            const std::ptrdiff_t j1 = panel_end(j0);
            const int w = int(j1 - j0);
            const int w_next = shape.prefetch && j1 < n ? int(panel_end(j1) - j1) : 0;
            sum_chunks<K>(m, chunk_rows, c0, c1, int(j0), w, part, stride, tile);
            if (nt > 1) barrier.wait(nt);
            // this thread's share of the panel's columns: totals in chunk order, then finish
            const int f0 = int(std::ptrdiff_t(w) * id / nt);
            const int f1 = int(std::ptrdiff_t(w) * (id + 1) / nt);
            if (f0 < f1) {
                chunk_totals<K>(part, nchunks, stride, f0, f1, total);
                finish(int(j0) + f0, int(j0) + f1, static_cast<const double*>(total + f0), stride);
            }
            if (nt > 1) barrier.wait(nt);
            if (r0 < r1) rows(r0, r1, int(j0), w, w_next);
            j0 = j1;
        }
    });
}

// The same contract without barriers (PanelShape::by_columns): each thread owns a contiguous
// range of columns, cut on the 64-byte boundaries of `align`'s rows, and does both passes
// over it alone, one panel of shape.bytes of each row at a time: the chunks' sums of the
// panel (each chunk's rows in row order, as above), their totals in chunk order, finish,
// then all its rows.
template <int K, class Tile, class Finish, class Rows>
inline void split_passes(int m, int n, const void* align, std::size_t itemsize,
                         const PanelShape& shape, Tile&& tile, Finish&& finish, Rows&& rows) {
    const int nchunks = reduce_chunks(m);
    const std::ptrdiff_t chunk_rows = (std::ptrdiff_t(m) + nchunks - 1) / nchunks;
    const std::ptrdiff_t line = std::ptrdiff_t(64 / itemsize);
    const std::ptrdiff_t width = std::ptrdiff_t(std::size_t(shape.bytes) / itemsize);
    const std::ptrdiff_t head = row_head(n, align, itemsize);
    const std::ptrdiff_t lines = (n - head + line - 1) / line;  // after the head
    const std::ptrdiff_t stride = width + line;  // the first panel has the head more
    const std::size_t per_thread = std::size_t(nchunks + 1) * K * stride;  // + the totals
    const int threads = max_threads();  // read once: parts has room for this many
    double* const parts = scratch<double>(Scratch::parts, std::size_t(threads) * per_thread);
    in_team(threads, [&](int nt, int id) {
        // this thread's columns [c0, c1): whole lines; the head goes to thread 0
        auto cut = [&](int t) {
            return t == 0 ? std::ptrdiff_t(0)
                          : std::min<std::ptrdiff_t>(n, head + lines * t / nt * line);
        };
        const std::ptrdiff_t c0 = cut(id), c1 = id == nt - 1 ? std::ptrdiff_t(n) : cut(id + 1);
        double* const part = parts + std::size_t(id) * per_thread;
        double* const total = part + std::size_t(nchunks) * K * stride;
        auto panel_end = [&](std::ptrdiff_t j0) {
            return std::min<std::ptrdiff_t>(c1, (j0 == 0 ? head : j0) + width);
        };
        for (std::ptrdiff_t j0 = c0; j0 < c1;) {
            const std::ptrdiff_t j1 = panel_end(j0);
            const int w = int(j1 - j0);
            const int w_next = shape.prefetch && j1 < c1 ? int(panel_end(j1) - j1) : 0;
            sum_chunks<K>(m, chunk_rows, 0, nchunks, int(j0), w, part, stride, tile);
            chunk_totals<K>(part, nchunks, stride, 0, w, total);
            finish(int(j0), int(j1), static_cast<const double*>(total), stride);
            rows(0, m, int(j0), w, w_next);
            j0 = j1;
        }
    });
}

// column_passes without the elementwise pass: out[k * n + j] = the K column sums.
template <int K, class Tile>
inline void column_reduce(int m, int n, bool parallel, double* out, Tile&& tile) {
    const bool one_tile = m <= kReduceRowsPerChunk && n <= kReduceBlock;
    column_passes<K>(
        m, n, parallel && !one_tile, out, tile, [](int, int, const double*, std::ptrdiff_t) {},
        NoRows{});
}

}  // namespace pydl
