"""Dense and activation kernels (pydl.ops) against float64 NumPy references of the formulas.

Reference (DESIGN.md "Conventions"): Z = A_prev @ W.T + b, A = g(Z);
dZ = dA * g'(Z), db = sum_i dZ, dW = dZ.T @ A_prev + (l2/m) W + (l1/(2m)) sign(W),
dA_prev = dZ @ W; penalty = l2/(2m) ||W||^2 + l1/(2m) sum |W|.
float64 is compared with rtol 1e-12, float32 with rtol 1e-5; atol is the same relative
tolerance times an elementwise bound on the magnitudes that were summed.
"""
import os

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import BLAS_PINNED as PINNED
from conftest import GEMM_KERNELS as KERNELS
from conftest import assert_close, f64, g_ref, gprime_of_a, numerical_grad, rel_diff
from pydl import ops

ACTS = ["identity", "relu", "leaky_relu", "tanh", "sigmoid"]
RTOL = {np.float64: 1e-12, np.float32: 1e-5}
DTYPES = [np.float64, np.float32]

# Sizes: tiny, odd, around the GEMM blocking (8 rows x 32 floats, K blocks of 256), and large enough
# to cross the 2^16-element OpenMP threshold.
dims = st.one_of(st.integers(1, 9), st.sampled_from([1, 16, 31, 63, 64, 65, 127, 129, 257, 513]))
seeds = st.integers(0, 2**32 - 1)
# PYDL_TEST_EXAMPLES=500 pytest ... for a deeper search than the default quick run.
SETTINGS = settings(max_examples=int(os.environ.get("PYDL_TEST_EXAMPLES", 30)), deadline=None)


# ------------------------------------------------------------------ forward


@SETTINGS
@given(m=dims, n_in=dims, n_out=dims, act=st.sampled_from(ACTS), use_bias=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=seeds)
@example(m=257, n_in=513, n_out=257, act="tanh", use_bias=True, dtype=np.float32, seed=1)
@example(m=257, n_in=513, n_out=129, act="relu", use_bias=False, dtype=np.float64, seed=2)
def test_dense_forward_matches_reference(m, n_in, n_out, act, use_bias, dtype, seed):
    rng = np.random.default_rng(seed)
    alpha = float(rng.uniform(0.01, 0.5))
    X = rng.standard_normal((m, n_in)).astype(dtype)
    W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype) if use_bias else None
    A = np.full((m, n_out), np.nan, dtype=dtype)  # every element must be written
    out = ops.dense_forward(A, X, W, b, activation=act, alpha=alpha)
    assert out is A
    Z = f64(X) @ f64(W).T + (f64(b) if use_bias else 0.0)
    bound = np.abs(f64(X)) @ np.abs(f64(W)).T + (np.abs(f64(b)) if use_bias else 0.0)
    rtol = RTOL[dtype]
    assert_close(A, g_ref(Z, act, alpha), rtol, rtol * bound)


# batch_invariant=True: each row of A from its row of A_prev alone (own kernel in row blocks
# over the threads), so any subset of the rows, in any batch, gives the same bits.
@pytest.mark.skipif(not ops.has_own_gemm, reason="the own GEMM kernel is not built (no AVX)")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n_in, n_out", [(1, 1, 1), (1, 784, 256), (7, 3, 10), (20, 5, 32),
                                            (300, 64, 10), (257, 513, 33), (1000, 300, 70)])
def test_dense_forward_batch_invariant_rows_do_not_depend_on_the_batch(m, n_in, n_out, dtype):
    """Rows of a batch equal, bit for bit, the same rows computed alone, in a batch of a
    shuffled subset, and on 1 or 2 threads; and they match the float64 reference."""
    rng = np.random.default_rng(m * 1000 + n_in)
    X = rng.standard_normal((m, n_in)).astype(dtype)
    W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)

    def run(rows, threads=2):
        previous = ops.get_num_threads()
        ops.set_num_threads(threads)
        try:
            A = np.full((len(rows), n_out), np.nan, dtype)
            return ops.dense_forward(A, np.ascontiguousarray(X[rows]), W, b, "tanh",
                                     batch_invariant=True)
        finally:
            ops.set_num_threads(previous)

    full = run(np.arange(m))
    Z = f64(X) @ f64(W).T + f64(b)
    rtol = RTOL[dtype]
    bound = np.abs(f64(X)) @ np.abs(f64(W)).T + np.abs(f64(b))
    assert_close(full, g_ref(Z, "tanh", 0.01), rtol, rtol * bound)
    assert np.array_equal(run(np.arange(m), threads=1), full)
    for i in sorted({0, m // 2, m - 1}):
        assert np.array_equal(run(np.array([i]))[0], full[i]), f"row {i} alone"
    subset = rng.permutation(m)[: max(1, (2 * m) // 3)]
    assert np.array_equal(run(subset), full[subset])


def test_dense_forward_batch_invariant_must_be_a_bool():
    X, W = np.ones((2, 3)), np.ones((4, 3))
    with pytest.raises(TypeError, match="batch_invariant"):
        ops.dense_forward(np.empty((2, 4)), X, W, batch_invariant="yes")


# ------------------------------------------------------------------ GEMM (csrc/blas.cpp)
# A dense layer's three products go through gemm, row-major C (M, N) = op(A) op(B) + beta C:
#   forward  A  = X @ W.T    M = m,      N = n_out,  K = n_in    (op(B) = W.T, transposed)
#   dW       dW = dZ.T @ X   M = n_out,  N = n_in,   K = m       (op(A) = dZ.T; beta = 1 with l2
#                                                                 or l1, C holding the penalty)
#   dA_prev  dX = dZ @ W     M = m,      N = n_in,   K = n_out
# All three have M*N*K = m*n_in*n_out. gemm runs each in pydl's own single-threaded kernel
# (own_gemm) or in SciPy's BLAS, by a rule that depends on the BLAS's kernels and the thread
# count (ops.gemm_kernel tells which; the tests below force each kernel in turn, so that both
# are tested on every machine). own_gemm with AVX-512: K in blocks of KC = 256 (float and
# double; the first block stores C = acc or acc + beta C, later ones add into C); op(B) in
# panels of NR = 32 floats / 16 doubles (two vectors; a panel of w <= NR/2 columns takes the
# one-vector tile), each packed into a KC x NR buffer zero-padded to the width the tile
# reads (the transposed forward pack moves 16 x 16 blocks through registers for each whole
# 16 columns of a float panel and whole 16-steps of K, and uses scalar code for the K % 16
# tail, the other columns and double); rows of op(A) in blocks of MR = 8, the last one
# repeating row M-1 and dropping the copies; a partial panel stores only its w columns. The edges, each hit in each role of each product:
#   M: 1, 7, 8, 9, 33                  (one row; a partial, full, full + 1-row block; 4 + 1)
#   N: 1, 8, 9, 15, 16, 17, 24, 31,    (one-/two-vector switch of double at 8/9 and of float
#      32, 33, 40, 48, 65               at 16/17, full panels, full + a partial panel)
#   K: 1, 15, 16, 17, 255, 256, 257,   (around the 16-step register transpose and KC;
#      300, 513                         300 = 256 + 2*16 + 12; 513 = 256 + 256 + 1)
M_EDGES = {1, 7, 8, 9, 33}
N_EDGES = {1, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 48, 65}
K_EDGES = {1, 15, 16, 17, 255, 256, 257, 300, 513}


@pytest.fixture(params=KERNELS)
def gemm_kernel(request):
    """Every product in the test runs in this kernel."""
    with ops._forced_gemm_kernel(request.param):
        yield request.param
# (m, n_in, n_out)
GEMM_EDGE_SHAPES = [
    (1, 1, 1), (7, 15, 65), (8, 16, 48), (9, 17, 33), (33, 255, 32), (33, 256, 31),
    (9, 257, 32), (7, 513, 33), (1, 300, 64), (33, 513, 65), (15, 31, 8), (16, 32, 9),
    (17, 65, 7), (255, 33, 17), (256, 48, 16), (257, 65, 15), (513, 17, 1), (300, 40, 33),
    (8, 24, 255), (9, 1, 256), (33, 16, 257), (1, 15, 513), (17, 8, 300), (7, 9, 40),
    (16, 40, 24),
]
GEMM_ROLES = {  # (M, N, K) of each product from (m, n_in, n_out)
    "forward": lambda m, n_in, n_out: (m, n_out, n_in),
    "dW": lambda m, n_in, n_out: (n_out, n_in, m),
    "dA_prev": lambda m, n_in, n_out: (m, n_in, n_out),
}
# Elements on each side of every array the GEMM tests pass: more than a packed panel row, and
# odd, so that the arrays start off any vector alignment.
GUARD = 67
OUT_GUARD = -1234.5  # what must still be around the outputs afterwards


def _guarded(a, fill):
    """A copy of `a`, C-contiguous, in the middle of a 1-D buffer of `fill` (GUARD elements
    either side); returns (view, buffer). A read past either end picks up `fill`, a write
    past either end changes it."""
    buf = np.full(a.size + 2 * GUARD, fill, a.dtype)
    view = buf[GUARD:GUARD + a.size].reshape(a.shape)
    view[...] = a
    return view, buf


def _output(shape, dtype):
    """NaN (every element must be written) inside OUT_GUARD."""
    return _guarded(np.full(shape, np.nan, dtype), OUT_GUARD)


def _assert_guard(buf, fill, name):
    edges = np.concatenate([buf[:GUARD], buf[-GUARD:]])
    assert np.array_equal(edges, np.full_like(edges, fill), equal_nan=True), \
        f"{name}: written outside the array"


def _inputs(rng, m, n_in, n_out, dtype):
    """X, W, dZ (standard normal) inside NaN guards, their buffers, and float64 copies."""
    shapes = dict(X=(m, n_in), W=(n_out, n_in), dZ=(m, n_out))
    arrays = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    guarded = {k: _guarded(a, np.nan) for k, a in arrays.items()}
    return guarded, {k: f64(a) for k, a in arrays.items()}


def _dense_products(inp, m, n_in, n_out, dtype, l2):
    """forward, dW (with l2) and dA_prev through ops on guarded arrays; checks every guard."""
    (X, Xb), (W, Wb), (dZ, dZb) = inp["X"], inp["W"], inp["dZ"]
    (A, Ab), (dW, dWb), (dX, dXb) = (_output(s, dtype) for s in
                                      [(m, n_out), (n_out, n_in), (m, n_in)])
    ops.dense_forward(A, X, W)
    # identity and no db: dZ is read as it is, A (the layer output) is not read
    ops.dense_backward(dX, dW, None, dZ, np.zeros((m, n_out), dtype), X, W, l2=l2)
    for name, buf in dict(A=Ab, dW=dWb, dA_prev=dXb).items():
        _assert_guard(buf, OUT_GUARD, name)
    for name, buf in dict(X=Xb, W=Wb, dZ=dZb).items():
        _assert_guard(buf, np.nan, name)
    return A, dW, dX


def _references(r, m, l2):
    """float64 forward, dW, dA_prev and the bounds on what they sum."""
    X, W, dZ = r["X"], r["W"], r["dZ"]
    aX, aW, adZ = np.abs(X), np.abs(W), np.abs(dZ)
    return ((X @ W.T, aX @ aW.T), (dZ.T @ X + (l2 / m) * W, adZ.T @ aX + (l2 / m) * aW),
            (dZ @ W, adZ @ aW))


def _check_three_products(m, n_in, n_out, dtype, seed):
    """The three products against float64, dW both without (beta = 0) and with l2 (beta = 1,
    l2/m = 1/2 so that a lost penalty shows)."""
    rng = np.random.default_rng(seed)
    inp, r = _inputs(rng, m, n_in, n_out, dtype)
    rtol = RTOL[dtype]
    for l2 in (0.0, 0.5 * m):
        got = _dense_products(inp, m, n_in, n_out, dtype, l2)
        for name, out, (ref, bound) in zip(["A", "dW", "dA_prev"], got, _references(r, m, l2)):
            try:
                assert_close(out, ref, rtol, rtol * bound)
            except AssertionError as e:
                raise AssertionError(f"{name} (l2={l2}): {e}") from None


def test_gemm_edge_shapes_cover_every_edge_in_every_role():
    for product, roles in GEMM_ROLES.items():
        for axis, edges in zip("MNK", (M_EDGES, N_EDGES, K_EDGES)):
            seen = {roles(*s)["MNK".index(axis)] for s in GEMM_EDGE_SHAPES}
            assert edges <= seen, f"{product}: {axis} never {sorted(edges - seen)}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n_in,n_out", GEMM_EDGE_SHAPES)
def test_three_products_at_every_edge_of_the_gemm_blocking(m, n_in, n_out, dtype, gemm_kernel):
    _check_three_products(m, n_in, n_out, dtype, seed=[m, n_in, n_out])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,n_in,n_out", [(2, 300, 64), (8, 257, 40), (9, 100, 2), (40, 3, 2),
                                          (2, 2, 300), (8, 1, 9), (3, 1030, 1100), (40, 2, 5)])
def test_three_products_with_few_rows_or_columns(m, n_in, n_out, dtype, gemm_kernel):
    """Products with at most 8 rows or 2 columns of C go to the BLAS as one gemv per row
    (column) (csrc/blas.cpp, gemv_product), each transpose of A and B among the three
    products; NaN-filled outputs show a row or column left unwritten or scaled by 0."""
    _check_three_products(m, n_in, n_out, dtype, seed=[m, n_in, n_out, 1])


def _bands(M, N, K, threads):
    """How gemm cuts a product (csrc/blas.cpp, split_of and band): a list of (start, stop)
    bands of C's columns (of its rows when M > N), and whether they are columns."""
    by_columns = N >= M
    n = N if by_columns else M
    parts = min(threads, n // 16) if PINNED and M * N * K >= 2**20 else 1
    if parts < 2:
        return [(0, N if by_columns else M)], by_columns
    blocks = -(-n // 16)
    return [(blocks * i // parts * 16, min(n, blocks * (i + 1) // parts * 16))
            for i in range(parts)], by_columns


def _parts(M, N, K, threads):
    """(parts, rows and columns of the first part)."""
    bands, by_columns = _bands(M, N, K, threads)
    width = bands[0][1] - bands[0][0]
    return (len(bands), M, width) if by_columns else (len(bands), width, N)


def _rule(M, N, K, dtype, threads, core):
    """The kernel choice as csrc/blas.cpp (is_own) documents it, for this build's vectors,
    with pydl's team on `threads` threads and SciPy's BLAS on one thread per call: a product
    cut into parts (_parts) takes the kernel of its first part's shape."""
    parts, M, N = _parts(M, N, K, threads)
    if PINNED:
        threads = 1
    vec = ops.own_gemm_vector_bytes
    mnk, itemsize = M * N * K, np.dtype(dtype).itemsize
    largest = max(M * K, K * N, M * N) * itemsize
    tiny = 2**17 if vec == 64 else 2**16
    if core == "" or core.lower() in ("skylakex", "cooperlake", "sapphirerapids"):
        limit = tiny if vec != 64 else 2**24 if threads == 1 else 2**22
        own = mnk <= limit and largest <= 4 << 20 and M >= 16 and K >= 16 and N >= 2 * vec // itemsize
    else:
        own = mnk <= tiny or (vec == 64 and K >= 8 and (
            threads == 1 or (mnk <= 2**26 and largest <= 4 << 20)))
    return "own" if own and vec else "blas"


def test_gemm_kernel_follows_the_documented_rule():
    core = ops.blas_core()
    previous = ops.get_num_threads()
    sizes = [1, 4, 8, 10, 15, 16, 17, 32, 64, 256, 1024, 1025, 2048, 4096]
    try:
        for threads in (1, 2):
            ops.set_num_threads(threads)
            for dtype in DTYPES:
                for M in sizes:
                    for N in sizes:
                        for K in sizes:
                            assert ops.gemm_kernel(M, N, K, dtype) == _rule(
                                M, N, K, dtype, threads, core), (M, N, K, dtype, threads, core)
    finally:
        ops.set_num_threads(previous)


def test_gemm_parts_follows_the_documented_rule():
    previous = ops.get_num_threads()
    sizes = [1, 15, 16, 31, 32, 33, 64, 100, 256, 1024, 4096]
    try:
        for threads in (1, 2, 3):
            ops.set_num_threads(threads)
            for M in sizes:
                for N in sizes:
                    for K in sizes:
                        assert ops.gemm_parts(M, N, K) == _parts(M, N, K, threads)[0], (
                            M, N, K, threads)
    finally:
        ops.set_num_threads(previous)


def test_gemm_kernel_checks_its_arguments():
    with pytest.raises(ValueError, match="M"):
        ops.gemm_kernel(-1, 2, 2)
    with pytest.raises(TypeError, match="dtype"):
        ops.gemm_kernel(2, 2, 2, np.int32)
    with pytest.raises(ValueError, match="kernel"):
        with ops._forced_gemm_kernel("fast"):
            pass


@pytest.mark.parametrize("dtype,shape,one_thread", [
    (np.float32, (64, 1024, 1024), False),  # 2^26, W 4 MB
    (np.float32, (64, 1024, 1025), False),  # 2^26 + 2^16, W > 4 MB
    (np.float32, (64, 1024, 1025), True),
    (np.float64, (64, 1024, 1025), True),
    (np.float32, (16, 1024, 256), False),   # 2^22
    (np.float32, (16, 1024, 257), False),   # 2^22 + 2^14
    (np.float32, (16, 1024, 1025), True),   # 2^24 + 2^14
])
def test_three_products_on_both_sides_of_the_rules_limits(dtype, shape, one_thread):
    # The limits of both rules (256- and 512-bit OpenBLAS; on one machine some pairs fall
    # on one side only: test_gemm_kernel_follows_the_documented_rule checks the sides).
    # 1025 = 1024 + 1 and 257 = 256 + 1 put the edges in big products too: forward N (a
    # 1-column panel), dW M (a 1-row block), dA_prev K (a last K block of 1).
    previous = ops.get_num_threads()
    try:
        if one_thread:
            ops.set_num_threads(1)
        _check_three_products(*shape, dtype, seed=list(shape))
    finally:
        if one_thread:
            ops.set_num_threads(previous)


def _forward(X, W):
    A = np.empty((X.shape[0], W.shape[0]), X.dtype)
    ops.dense_forward(A, X, W)
    return A


def _blas_forward_as_gemm_cuts_it(X, W, threads):
    """X W^T by the sgemm calls gemm makes for the BLAS: one, or one per band of C's
    columns (rows) when it cuts the product into parts (SciPy's BLAS on one thread per
    call); OpenBLAS's bits for a band may differ from those of the whole product's."""
    from scipy.linalg.blas import sgemm

    (m, k), n = X.shape, W.shape[0]
    bands, by_columns = _bands(m, n, k, threads)
    C = np.empty((m, n), np.float32)
    for b, e in bands:
        if by_columns:
            C[:, b:e] = sgemm(1.0, W[b:e].T, X.T, trans_a=1).T
        else:
            C[b:e] = sgemm(1.0, W.T, X[b:e].T, trans_a=1).T
    return C


@pytest.mark.skipif(not ops.has_openmp, reason="built without OpenMP")
def test_gemm_kernel_names_the_kernel_that_runs():
    """What ops.gemm_kernel answers is what runs. A product it sends to the BLAS has the
    bits of the same raw sgemm call at the same thread count; one it keeps has the same bits
    at 1 and 2 threads (own_gemm is single-threaded, and its bits do not depend on where
    gemm cuts the product), and, with K = 300 or 513 (blocks of
    256 + 44, 256 + 256 + 1), other bits than the BLAS's: the check can tell them apart.
    (Bitwise only with an OpenBLAS: MKL's bits may depend on the arrays' alignment.)"""
    from scipy.linalg.blas import sgemm

    rng = np.random.default_rng(7)
    shapes = [(32, 300, 64), (32, 513, 64), (64, 1024, 1025), (16, 2048, 2048), (32, 784, 10),
              (16, 1024, 257), (128, 300, 256), (16, 32, 64)]  # the last: own under every rule
    inputs = {s: (rng.standard_normal((s[0], s[1])).astype(np.float32),
                  rng.standard_normal((s[2], s[1])).astype(np.float32)) for s in shapes}
    previous = ops.get_num_threads()
    own, kernels = {}, set()
    try:
        for threads in (1, 2):
            ops.set_num_threads(threads)
            for (m, n_in, n_out), (X, W) in inputs.items():
                kernel = ops.gemm_kernel(m, n_out, n_in)
                kernels.add(kernel)
                A = _forward(X, W)
                blas = _blas_forward_as_gemm_cuts_it(X, W, threads)
                if kernel == "blas" and ops.blas_core():
                    assert np.array_equal(A, blas), ((m, n_in, n_out), threads)
                elif kernel == "blas":
                    assert_close(A, blas, 1e-5, 1e-5 * (np.abs(X) @ np.abs(W.T)))
                else:
                    own.setdefault((m, n_in, n_out), []).append((A, blas))
    finally:
        ops.set_num_threads(previous)
    assert kernels == ({"own", "blas"} if ops.has_own_gemm else {"blas"})
    for shape, results in own.items():
        assert all(np.array_equal(results[0][0], A) for A, _ in results), shape
        if shape[1] in (300, 513):
            assert not np.array_equal(results[0][0], results[0][1]), shape


def _assert_nonfinite_where_expected(out, expected, rtol, bound, name):
    bad = ~np.isfinite(expected)
    wrong = np.argwhere(~np.isfinite(out) != bad)
    assert wrong.size == 0, f"{name}: {len(wrong)} wrongly (non-)finite, first {wrong[:5].tolist()}"
    assert np.array_equal(out[bad], expected[bad], equal_nan=True), f"{name}: wrong inf/NaN"
    assert_close(out[~bad], expected[~bad], rtol, rtol * bound[~bad])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_out", [33, 10])
def test_gemm_nan_and_inf_reach_only_their_own_rows_and_columns(n_out, dtype, gemm_kernel):
    # m = 9: the last row block (forward, dA_prev) is row 8 and 7 copies of it; n_out = 33:
    # a full panel + a 1-column one in the forward (in dW 4 row blocks + 1 row), n_out = 10:
    # one narrow panel; n_in = 300: the forward's K crosses a K block (256 + 2*16 + 12), and
    # dW/dA_prev have 300 = 9 * 32 + 12 columns. NaN in X at row 8 (the repeated row; second
    # K block) and row 2 (first block); inf in W in the last output column (second K block,
    # a partial or narrow panel) and in column 5 at p = 137 (for n_out = 33 inside a
    # register-transposed 16 x 16 block of the forward pack). Each must reach exactly the
    # elements that sum it: no neighbouring lane, no other row, nothing outside the arrays.
    m, n_in = 9, 300
    nans, infs = [(8, 290), (2, 3)], [(n_out - 1, 270), (5, 137)]
    rng = np.random.default_rng(n_out)
    inp, r = _inputs(rng, m, n_in, n_out, dtype)
    for i, p in nans:
        inp["X"][0][i, p] = np.nan
    for j, p in infs:
        inp["W"][0][j, p] = np.inf
    X, dZ = r["X"], r["dZ"]
    rtol = RTOL[dtype]
    for l2 in (0.0, 0.5 * m):
        got = _dense_products(inp, m, n_in, n_out, dtype, l2)
        (A, A_bound), (dW, dW_bound), (dX, dX_bound) = _references(r, m, l2)
        for j, p in infs:
            A[:, j] = np.sign(X[:, p]) * np.inf  # X[i, p] * inf
            dX[:, p] = np.sign(dZ[:, j]) * np.inf  # dZ[i, j] * inf
            if l2:
                dW[j, p] = np.inf  # (l2/m) * inf in C; beta C + finite
        for i, p in nans:
            A[i, :] = np.nan
            dW[:, p] = np.nan  # dZ[i, j] * NaN
        for name, out, ref, bound in zip(["A", "dW", "dA_prev"], got, [A, dW, dX],
                                         [A_bound, dW_bound, dX_bound]):
            _assert_nonfinite_where_expected(out, ref, rtol, bound, f"{name} (l2={l2})")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l2,l1", [(300.0, 0.0), (0.0, 120.0), (300.0, 120.0)])
def test_dW_accumulates_onto_the_penalty_across_k_blocks(l2, l1, dtype, gemm_kernel):
    # dW's K is m = 600: blocks of 256, 256 and 88. The penalty (l2/m) W + (l1/(2m)) sign(W)
    # is written into dW first (1/2 W, 1/10 sign W: far above the tolerance), the first K
    # block adds onto it (beta = 1), the others add into C. With dZ = 0 only the penalty stays.
    m, n_in, n_out = 600, 65, 33
    rng = np.random.default_rng(7)
    X = rng.standard_normal((m, n_in)).astype(dtype)
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    rtol = RTOL[dtype]
    penalty = (l2 / m) * f64(W) + (l1 / (2 * m)) * np.sign(f64(W))
    for dZ in (rng.standard_normal((m, n_out)).astype(dtype), np.zeros((m, n_out), dtype)):
        dW, dWb = _output((n_out, n_in), dtype)
        ops.dense_backward(None, dW, None, dZ, np.zeros_like(dZ), X, W, l2=l2, l1=l1)
        _assert_guard(dWb, OUT_GUARD, "dW")
        bound = np.abs(f64(dZ)).T @ np.abs(f64(X)) + np.abs(penalty)
        assert_close(dW, f64(dZ).T @ f64(X) + penalty, rtol, rtol * bound)


# ------------------------------------------------------------------ backward


@SETTINGS
@given(m=dims, n_in=dims, n_out=dims, act=st.sampled_from(ACTS), with_db=st.booleans(),
       with_dA_prev=st.booleans(), reg=st.sampled_from(["none", "l2", "l1", "both"]),
       dtype=st.sampled_from(DTYPES), seed=seeds)
@example(m=257, n_in=513, n_out=257, act="sigmoid", with_db=True, with_dA_prev=True,
         reg="both", dtype=np.float32, seed=3)
@example(m=1, n_in=1, n_out=1, act="leaky_relu", with_db=False, with_dA_prev=False,
         reg="l1", dtype=np.float64, seed=4)
@example(m=300, n_in=5, n_out=2100, act="relu", with_db=True, with_dA_prev=True,
         reg="none", dtype=np.float32, seed=5)  # db over 3 row chunks x 3 column blocks
def test_dense_backward_matches_reference(m, n_in, n_out, act, with_db, with_dA_prev, reg, dtype,
                                          seed):
    rng = np.random.default_rng(seed)
    alpha = float(rng.uniform(0.01, 0.5))
    l2 = float(rng.uniform(0.01, 2.0)) if reg in ("l2", "both") else 0.0
    l1 = float(rng.uniform(0.01, 2.0)) if reg in ("l1", "both") else 0.0
    X = rng.standard_normal((m, n_in)).astype(dtype)
    W = (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(dtype)
    Z = rng.standard_normal((m, n_out))
    A = g_ref(Z, act, alpha).astype(dtype)
    dA = rng.standard_normal((m, n_out)).astype(dtype)

    dZ = dA.copy()
    dW = np.full((n_out, n_in), np.nan, dtype=dtype)
    db = np.full(n_out, np.nan, dtype=dtype) if with_db else None
    dA_prev = np.full((m, n_in), np.nan, dtype=dtype) if with_dA_prev else None
    ops.dense_backward(dA_prev, dW, db, dZ, A, X, W, activation=act, alpha=alpha, l2=l2, l1=l1)

    rtol = RTOL[dtype]
    dZ_ref = f64(dA) * gprime_of_a(A, act, alpha)
    assert_close(dZ, dZ_ref, rtol, rtol * np.abs(f64(dA)))
    Wd = f64(W)
    dW_ref = dZ_ref.T @ f64(X) + (l2 / m) * Wd + (l1 / (2 * m)) * np.sign(Wd)
    dW_bound = np.abs(dZ_ref).T @ np.abs(f64(X)) + (l2 / m) * np.abs(Wd) + l1 / (2 * m)
    assert_close(dW, dW_ref, rtol, rtol * dW_bound)
    if with_db:
        assert_close(db, dZ_ref.sum(axis=0), rtol, rtol * np.abs(dZ_ref).sum(axis=0))
    if with_dA_prev:
        assert_close(dA_prev, dZ_ref @ Wd, rtol, rtol * (np.abs(dZ_ref) @ np.abs(Wd)))


def test_dense_backward_identity_without_db_leaves_dZ_equal_to_dA():
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((5, 3)), rng.standard_normal((4, 3))
    dA = rng.standard_normal((5, 4))
    dZ, dW = dA.copy(), np.empty((4, 3))
    ops.dense_backward(None, dW, None, dZ, np.zeros((5, 4)), X, W)
    assert np.array_equal(dZ, dA)
    assert_close(dW, dA.T @ X, 1e-12, 1e-12)


# ------------------------------------------------------------------ elementwise activations

shapes = st.one_of(
    st.tuples(st.integers(1, 300)),
    st.tuples(dims, dims),
    st.tuples(st.integers(1, 5), st.integers(1, 7), st.integers(1, 9)),
)


@SETTINGS
@given(shape=shapes, act=st.sampled_from(ACTS), in_place=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=seeds)
def test_activation_forward_backward_match_reference(shape, act, in_place, dtype, seed):
    rng = np.random.default_rng(seed)
    alpha = float(rng.uniform(0.01, 0.5))
    Z = (3 * rng.standard_normal(shape)).astype(dtype)
    rtol = RTOL[dtype]
    A_ref = g_ref(f64(Z), act, alpha)
    A = Z.copy() if in_place else np.full(shape, np.nan, dtype=dtype)
    ops.activation_forward(A, A if in_place else Z, act, alpha=alpha)
    assert_close(A, A_ref, rtol, rtol * np.abs(f64(Z)))

    A = A_ref.astype(dtype)
    dA = rng.standard_normal(shape).astype(dtype)
    dZ = dA.copy() if in_place else np.full(shape, np.nan, dtype=dtype)
    ops.activation_backward(dZ, dZ if in_place else dA, A, act, alpha=alpha)
    assert_close(dZ, f64(dA) * gprime_of_a(A, act, alpha), rtol, rtol * np.abs(f64(dA)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_saturate_without_nan(dtype):
    Z = np.array([-1e4, -100.0, -30.0, 0.0, 30.0, 100.0, 1e4], dtype=dtype)
    for act in ACTS:
        A = np.empty_like(Z)
        ops.activation_forward(A, Z, act)
        assert np.isfinite(A).all(), act
        assert_close(A, g_ref(f64(Z), act, 0.01), RTOL[dtype], 1e-30)


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_float32_tanh_and_sigmoid_within_4_ulp_everywhere(act):
    """The vectorized float tanh/sigmoid (common.hpp) on a dense grid of [-120, 120], both
    sides of tanh's polynomial/exp switch at |z| = 0.625, and the special values."""
    grid = np.linspace(-120, 120, 480001)
    edges = np.nextafter(np.float32(0.625), np.float32([-1, 2])).astype(np.float64)
    specials = [0.0, -0.0, 1e-30, -1e-30, 0.625, -0.625, 87.3, -87.3, 88.5, -88.5, 1e4, -1e4]
    Z = np.concatenate([grid, edges, -edges, specials]).astype(np.float32)
    A = np.empty_like(Z)
    ops.activation_forward(A, Z, act)
    ref = g_ref(f64(Z), act, 0.0)
    normal = np.abs(ref) >= np.finfo(np.float32).tiny
    rel = np.abs(f64(A[normal]) - ref[normal]) / np.abs(ref[normal])
    assert rel.max() <= 4 * 2.0**-24, (act, float(rel.max()))
    # below the normal range: 0 or the denormal, never more than the smallest normal off
    assert np.abs(f64(A[~normal]) - ref[~normal]).max() <= np.finfo(np.float32).tiny
    assert np.all(np.signbit(A[Z == 0]) == (np.signbit(Z[Z == 0]) & (act == "tanh")))
    special = np.array([np.inf, -np.inf, np.nan], np.float32)
    out = np.empty_like(special)
    ops.activation_forward(out, special, act)
    expect = [1.0, -1.0] if act == "tanh" else [1.0, 0.0]
    assert out[0] == expect[0] and out[1] == expect[1] and np.isnan(out[2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_nan_propagates_through_every_activation(act, dtype):
    # As np.maximum / torch.relu: a NaN must reach the loss so that a diverged network is
    # seen (relu used to turn NaN into 0).
    Z = np.array([[np.nan, 2.0, -2.0], [1.0, -1.0, 0.5]], dtype=dtype)
    A = np.empty_like(Z)
    ops.activation_forward(A, Z, act, alpha=0.1)
    assert np.isnan(A[0, 0])
    assert_close(A[1], g_ref(f64(Z[1]), act, 0.1), RTOL[dtype])
    X = np.array([[1.0, np.nan], [1.0, 2.0]], dtype=dtype)
    W = np.ones((3, 2), dtype=dtype)
    ops.dense_forward(A, X, W, np.zeros(3, dtype), activation=act, alpha=0.1)
    assert np.isnan(A[0]).all() and np.isfinite(A[1]).all()


# ------------------------------------------------------------------ weight penalty


@SETTINGS
@given(shape=shapes, m=st.integers(1, 1000), l2=st.sampled_from([0.0, 0.1, 3.0]),
       l1=st.sampled_from([0.0, 0.05, 2.0]), dtype=st.sampled_from(DTYPES), seed=seeds)
def test_weight_penalty_matches_reference(shape, m, l2, l1, dtype, seed):
    W = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    Wd = f64(W)
    ref = l2 / (2 * m) * np.sum(Wd**2) + l1 / (2 * m) * np.sum(np.abs(Wd))
    got = ops.weight_penalty(W, l2=l2, l1=l1, m=m)
    assert isinstance(got, float)
    # Sums are taken in double for both dtypes.
    assert_close(got, ref, 1e-12, 1e-300)


# ------------------------------------------------------------------ gradient checks


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("reg", ["none", "l2", "l1"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_dense_gradient_check(act, reg, use_bias):
    rng = np.random.default_rng([ACTS.index(act), ["none", "l2", "l1"].index(reg), use_bias])
    m, n_in, n_out, alpha = 5, 4, 3, 0.1
    l2 = 0.7 if reg == "l2" else 0.0
    l1 = 0.3 if reg == "l1" else 0.0
    for _ in range(1000):  # keep every Z and W away from kinks (relu at 0, |W| at 0)
        X = rng.standard_normal((m, n_in))
        W = rng.standard_normal((n_out, n_in))
        b = rng.standard_normal(n_out) if use_bias else None
        Z = X @ W.T + (b if use_bias else 0.0)
        if np.abs(Z).min() > 1e-2 and np.abs(W).min() > 1e-2:
            break
    R = rng.standard_normal((m, n_out))  # J = sum(R * A) + penalty
    A = np.empty((m, n_out))

    def J():
        ops.dense_forward(A, X, W, b, activation=act, alpha=alpha)
        return float(np.sum(R * A)) + ops.weight_penalty(W, l2=l2, l1=l1, m=m)

    J()
    dZ, dW, dX = R.copy(), np.empty_like(W), np.empty_like(X)
    db = np.empty(n_out) if use_bias else None
    ops.dense_backward(dX, dW, db, dZ, A.copy(), X, W, activation=act, alpha=alpha, l2=l2, l1=l1)
    assert np.abs(dW).sum() > 0  # a check of all-zero gradients would prove nothing
    checks = [("W", W, dW), ("A_prev", X, dX)] + ([("b", b, db)] if use_bias else [])
    for name, param, analytic in checks:
        d = rel_diff(numerical_grad(J, param), analytic)
        assert d < 1e-7, f"{name}: relative difference {d:.2e}"
