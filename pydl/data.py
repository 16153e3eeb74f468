"""Data handling: train/dev/test split, standardization, mini-batches, augmentation.

Rows are examples: ``X`` has shape ``(m, n)`` (m examples, n features), labels
``y`` have ``m`` rows (integer class ids ``(m,)``, one-hot ``(m, C)`` or floats).
Image augmentations see each row as one flattened image of ``image_shape``
``(H, W)`` or ``(H, W, C)`` in C (row-major) order.
"""
import math
import mmap
import numbers

import numpy as np

__all__ = [
    "train_dev_test_split",
    "Standardizer",
    "minibatches",
    "HorizontalFlip",
    "RandomShift",
    "RandomRotation",
    "GaussianNoise",
    "Compose",
]

_AUTO_DIVISOR = 5          # dev and test each take floor(20% of m) = m // 5 ...
_AUTO_CAP = 10_000         # ... but never more than 10_000 rows
_BLOCK_BYTES = 32 * 2**20  # default read size for memory-mapped mini-batches


# ----------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------

def _rng(seed, name="seed"):
    """np.random.Generator from None, an int, or an existing Generator."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, bool)):
        if seed is not None and seed < 0:
            raise ValueError(f"{name} must be a non-negative int, got {seed}")
        return np.random.default_rng(seed)
    raise TypeError(f"{name} must be None, a non-negative int or a numpy.random.Generator, "
                    f"got {type(seed).__name__}")


def _as_rows(a, name, ndim=None):
    """Array view of `a` without copying ndarrays (memory maps stay memory maps)."""
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be array-like, got {type(a).__name__}") from e
    if a.dtype == object or a.dtype.kind == "c":  # complex would be cast silently to real
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    if a.ndim == 0:
        raise ValueError(f"{name} must have one row per example, got a scalar")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D (m, n_features), got shape {a.shape}")
    return a


def _numeric(a, name):
    """a itself if it holds numbers (bool, int or float); strings etc. are a TypeError."""
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a numeric array, got dtype {a.dtype}")
    return a


def _check_y(y, m, name="y"):
    y = _as_rows(y, name)
    if y.shape[0] != m:
        raise ValueError(f"{name} has {y.shape[0]} rows but X has {m}; they must match")
    return y


def _positive_int(v, name):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < 1:
        raise ValueError(f"{name} must be >= 1, got {v}")
    return int(v)


def _real(v, name):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def _is_memory_mapped(a):
    """True if `a` (or an array it is a view of) is backed by a memory-mapped file."""
    while a is not None:
        if isinstance(a, (np.memmap, mmap.mmap)):
            return True
        a = getattr(a, "base", None)
    return False


# ----------------------------------------------------------------------------
# train / dev / test split
# ----------------------------------------------------------------------------

def _split_sizes(m, ratios):
    """(n_train, n_dev, n_test) for m rows."""
    if isinstance(ratios, str):
        if ratios != "auto":
            raise ValueError(f'ratios must be "auto" or (train, dev, test), got {ratios!r}')
        k = max(1, min(m // _AUTO_DIVISOR, _AUTO_CAP))
        return m - 2 * k, k, k
    try:
        r = [float(v) for v in ratios]
    except (TypeError, ValueError) as e:
        raise TypeError(f'ratios must be "auto" or three floats (train, dev, test), '
                        f'got {ratios!r}') from e
    if len(r) != 3:
        raise ValueError(f"ratios must have 3 entries (train, dev, test), got {len(r)}")
    if not all(math.isfinite(v) and v >= 0 for v in r):
        raise ValueError(f"ratios must be non-negative and finite, got {tuple(ratios)}")
    if abs(sum(r) - 1.0) > 1e-9:
        raise ValueError(f"ratios must sum to 1, got {tuple(ratios)} (sum {sum(r)!r})")
    if r[0] == 0:
        raise ValueError(f"ratios: the train ratio must be > 0, got {tuple(ratios)}")
    # round down; a non-zero dev/test ratio always gets at least one row
    n_dev, n_test = (max(1, int(v * m + 1e-9)) if v > 0 else 0 for v in r[1:])
    n_train = m - n_dev - n_test
    if n_train < 1:
        raise ValueError(f"ratios {tuple(ratios)} leave no training rows for m={m}")
    return n_train, n_dev, n_test


def _stratified_order(labels, rng):
    """Permutation of range(m) whose every prefix keeps class proportions.

    Row j of class c (of size m_c), at random rank r within its class, gets the
    key (r + 0.5) / m_c; sorting by key (random tie-break) interleaves the
    classes so that any k leading rows hold about k * m_c / m rows of class c.
    """
    m = labels.shape[0]
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    perm = rng.permutation(m)
    by_class = perm[np.argsort(inverse[perm], kind="stable")]  # grouped, random within class
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(m, dtype=np.int64)
    rank[by_class] = np.arange(m) - np.repeat(starts, counts)
    key = (rank + 0.5) / counts[inverse]
    return np.lexsort((rng.random(m), key))


def train_dev_test_split(X, y, ratios="auto", shuffle=True, stratify=False, seed=None):
    """Split (X, y) into train, dev and test sets drawn from the same distribution.

    X: (m, n), y: (m,) or (m, C); m >= 3.
    ratios: "auto" -> dev and test each get min(floor(0.2 m), 10_000) rows
        (60/20/20 for small data, 98/1/1 at a million rows), at least one each;
        or (train, dev, test): non-negative floats summing to 1 (within 1e-9);
        dev and test get floor(ratio * m) rows (at least 1 if the ratio is > 0),
        train gets the rest.
    shuffle: shuffle rows before splitting; shuffle=False keeps the order
        (train = first rows, then dev, then test), e.g. for time series.
    stratify: keep the class proportions of integer labels y (m,) in every
        split (to within about one row per class); requires shuffle=True.
    seed: None, int or numpy Generator.

    Returns (X_train, y_train, X_dev, y_dev, X_test, y_test), new arrays of the
    input dtypes, with n_train + n_dev + n_test = m rows, each row used once.
    """
    X = _as_rows(X, "X", ndim=2)
    m = X.shape[0]
    y = _check_y(y, m)
    if m < 3:
        raise ValueError(f"X has {m} rows; a train/dev/test split needs at least 3")
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be a bool, got {type(shuffle).__name__}")
    if not isinstance(stratify, (bool, np.bool_)):
        raise TypeError(f"stratify must be a bool, got {type(stratify).__name__}")
    n_train, n_dev, n_test = _split_sizes(m, ratios)
    rng = _rng(seed)

    if stratify:
        if not shuffle:
            raise ValueError("stratify=True requires shuffle=True")
        if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
            raise TypeError(f"stratify=True needs integer class labels y of shape (m,), "
                            f"got y with shape {y.shape} and dtype {y.dtype}")
        order = _stratified_order(y, rng)
        # test and dev come first in the order so both are stratified prefixes
        test, dev, train = np.split(order, [n_test, n_test + n_dev])
        train, dev, test = (rng.permutation(part) for part in (train, dev, test))
    else:
        order = rng.permutation(m) if shuffle else np.arange(m)
        train, dev, test = np.split(order, [n_train, n_train + n_dev])

    out = []
    for idx in (train, dev, test):
        out += [np.take(X, idx, axis=0), np.take(y, idx, axis=0)]
    return tuple(out)


# ----------------------------------------------------------------------------
# standardization
# ----------------------------------------------------------------------------

class Standardizer:
    """Per-feature standardization fit on the training set only.

    fit:        mean_ = mean(X_train, axis=0)                 (n,)
                scale_ = std(X_train, axis=0, ddof=0)         (n,), 1 for constant features
    transform:  (X - mean_) / scale_                          (m, n)

    Statistics are float64. transform keeps a floating X's dtype and returns
    float32 for integer input. Apply the same fitted Standardizer unchanged
    to dev and test data.

    Any finite X up to the float64 limit works: the sums are taken on each
    column divided by a power of two near its largest |x| (exact, so the
    result is the textbook formula's bit for bit wherever that does not
    overflow), and transform/inverse_transform halve before subtracting. A
    result that cannot be represented in the output dtype (e.g. beyond the
    float32 range for float32 X) is a ValueError naming the argument.
    """

    def __init__(self):
        self.mean_ = None
        self.scale_ = None

    @property
    def n_features_(self):
        return None if self.mean_ is None else self.mean_.shape[0]

    def fit(self, X):
        """Compute mean_ and scale_ from X (m, n), m >= 1; returns self.

        Reads X in row chunks (float64 accumulation), so a memory-mapped X
        is never loaded whole.
        """
        X = _numeric(_as_rows(X, "X", ndim=2), "X")
        m, n = X.shape
        if m < 1:
            raise ValueError("X has 0 rows; cannot fit a Standardizer")
        chunk = max(1, 2**20 // max(n, 1))
        total = np.zeros(n)
        lo = np.full(n, np.inf)
        hi = np.full(n, -np.inf)
        for s in range(0, m, chunk):
            c = np.asarray(X[s:s + chunk], dtype=np.float64)
            if not np.all(np.isfinite(c)):
                raise ValueError("X contains NaN or infinity; cannot fit a Standardizer")
            with np.errstate(over="ignore"):  # an overflow is redone below on scaled data
                total += c.sum(axis=0)
            lo = np.minimum(lo, c.min(axis=0))
            hi = np.maximum(hi, c.max(axis=0))
        # Per-column power of two p with max|x| / p in [1, 2): sums of x / p and of
        # ((x - mean) / p)**2 cannot overflow (or underflow to 0), and dividing by p is exact.
        amax = np.maximum(np.abs(lo), np.abs(hi))
        p = np.ldexp(1.0, np.frexp(amax)[1] - 1)
        if not np.all(np.isfinite(total)):  # the plain sum overflowed: sum x / p instead
            total = np.zeros(n)
            for s in range(0, m, chunk):
                total += (np.asarray(X[s:s + chunk], dtype=np.float64) / p).sum(axis=0)
            mean = total / m * p
        else:
            mean = total / m
        sq = np.zeros(n)
        for s in range(0, m, chunk):  # second pass: sum of squared (scaled) deviations
            c = np.asarray(X[s:s + chunk], dtype=np.float64) / p - mean / p
            sq += np.einsum("ij,ij->j", c, c)
        scale = np.minimum(np.sqrt(sq / m) * p, amax)  # std <= (hi - lo) / 2 <= max|x|
        scale[(hi == lo) | (scale == 0)] = 1.0  # constant feature: leave it centred, no NaN
        self.mean_, self.scale_ = mean, scale
        return self

    def _check_fitted(self, X, name="X"):
        if self.mean_ is None:
            raise RuntimeError("Standardizer is not fitted; call fit(X_train) first")
        X = _numeric(_as_rows(X, name, ndim=2), name)
        if X.shape[1] != self.n_features_:
            raise ValueError(f"{name} has {X.shape[1]} features but the Standardizer was fitted "
                             f"on {self.n_features_}")
        return X

    @staticmethod
    def _halved(X, name, what, steps):
        """2 * steps(X / 2) in float64 (or wider), cast to X's float dtype (float32 for integer X).

        Halving first (exact) keeps every intermediate finite whenever the result is, so
        an overflow means the result itself is out of range: ValueError naming ``name``.
        """
        dtype = X.dtype if np.issubdtype(X.dtype, np.floating) else np.float32
        try:
            with np.errstate(over="raise"):
                Z = np.multiply(X, 0.5, dtype=np.result_type(X.dtype, np.float64))
                steps(Z)
                Z *= 2.0
                return Z.astype(dtype, copy=False)
        except FloatingPointError:
            raise ValueError(f"{what} of {name} has values beyond the {np.dtype(dtype).name} "
                             f"range; {name} is too far from the data the Standardizer was "
                             "fitted on") from None

    def transform(self, X):
        """(X - mean_) / scale_ for X (m, n); returns a new array (m, n)."""
        X = self._check_fitted(X)

        def steps(Z):
            Z -= 0.5 * self.mean_
            Z /= self.scale_
        return self._halved(X, "X", "the standardized value", steps)

    def fit_transform(self, X):
        """fit(X) then transform(X)."""
        return self.fit(X).transform(X)

    def inverse_transform(self, Z):
        """Z * scale_ + mean_ for Z (m, n): undoes transform."""
        Z = self._check_fitted(Z, "Z")

        def steps(H):
            H *= self.scale_
            H += 0.5 * self.mean_
        return self._halved(Z, "Z", "inverse_transform", steps)

    def state(self):
        """{"mean": (n,), "scale": (n,)} float64 copies, e.g. to store in an .npz."""
        if self.mean_ is None:
            raise RuntimeError("Standardizer is not fitted; nothing to save")
        return {"mean": self.mean_.copy(), "scale": self.scale_.copy()}

    @classmethod
    def from_state(cls, d):
        """Standardizer from the dict returned by state() (validated)."""
        try:
            mean, scale = d["mean"], d["scale"]
        except (KeyError, TypeError, IndexError) as e:
            raise ValueError("state must be a mapping with keys 'mean' and 'scale'") from e
        arrs = {}
        for key, v in (("mean", mean), ("scale", scale)):
            try:
                a = np.array(v, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise TypeError(f"state['{key}'] must be a numeric array") from e
            if a.ndim != 1 or a.shape[0] < 1:
                raise ValueError(f"state['{key}'] must have shape (n,), got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"state['{key}'] contains NaN or infinity")
            arrs[key] = a
        if arrs["mean"].shape != arrs["scale"].shape:
            raise ValueError(f"state['mean'] has shape {arrs['mean'].shape} but "
                             f"state['scale'] has {arrs['scale'].shape}; they must match")
        if np.any(arrs["scale"] <= 0):
            raise ValueError("state['scale'] must be > 0 everywhere")
        obj = cls()
        obj.mean_, obj.scale_ = arrs["mean"], arrs["scale"]
        return obj

    def __repr__(self):
        if self.mean_ is None:
            return "Standardizer(not fitted)"
        return f"Standardizer(n_features={self.n_features_})"


# ----------------------------------------------------------------------------
# mini-batches
# ----------------------------------------------------------------------------

def minibatches(X, y, batch_size, shuffle=True, seed=None, block_rows=None):
    """Yield (Xb, yb) mini-batches covering every row of (X, y) exactly once.

    X: (m, ...), y: (m, ...). Every batch has batch_size rows except the last,
    which holds the remaining m % batch_size rows (if any).

    In-memory arrays: shuffle=True draws one permutation of range(m) and
    gathers each batch with np.take (a new array); shuffle=False yields
    consecutive slices (views of X and y).

    Memory-mapped arrays (np.memmap, np.load(..., mmap_mode="r")) are never
    loaded whole: rows are read in contiguous blocks of block_rows rows (a
    multiple of batch_size, default about 32 MB of X). shuffle=True visits the
    blocks in random order and shuffles rows within each block, so reads stay
    sequential and memory stays O(block_rows). Batches are in-memory copies.

    seed: None, int or numpy Generator. Arguments are validated when
    minibatches() is called, before the first batch.
    """
    X = _as_rows(X, "X")
    m = X.shape[0]
    y = _check_y(y, m)
    batch_size = _positive_int(batch_size, "batch_size")
    if m < 1:
        raise ValueError("X has 0 rows; nothing to batch")
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be a bool, got {type(shuffle).__name__}")
    rng = _rng(seed)
    mapped = _is_memory_mapped(X) or _is_memory_mapped(y)
    if block_rows is None:
        row_bytes = max(1, X.itemsize * int(np.prod(X.shape[1:], dtype=np.int64)))
        block_rows = max(batch_size, _BLOCK_BYTES // row_bytes // batch_size * batch_size)
    else:
        block_rows = _positive_int(block_rows, "block_rows")
        if block_rows % batch_size:
            raise ValueError(f"block_rows must be a multiple of batch_size={batch_size}, "
                             f"got {block_rows}")
    if not mapped:
        return _batches_in_memory(X, y, batch_size, shuffle, rng)
    return _batches_blocked(X, y, batch_size, shuffle, rng, block_rows)


def _batches_in_memory(X, y, batch_size, shuffle, rng):
    m = X.shape[0]
    perm = rng.permutation(m) if shuffle else None
    for s in range(0, m, batch_size):
        if shuffle:
            idx = perm[s:s + batch_size]
            yield np.take(X, idx, axis=0), np.take(y, idx, axis=0)
        else:
            yield X[s:s + batch_size], y[s:s + batch_size]


def _batches_blocked(X, y, batch_size, shuffle, rng, block_rows):
    m = X.shape[0]
    starts = np.arange(0, m, block_rows)
    if shuffle:
        starts = rng.permutation(starts)
    carry_X = carry_y = None  # rows left over from the previous block (< batch_size)
    for s in starts:
        Xk = np.array(X[s:s + block_rows])  # one sequential read of the block
        yk = np.array(y[s:s + block_rows])
        if shuffle:
            p = rng.permutation(Xk.shape[0])
            Xk, yk = Xk[p], yk[p]
        if carry_X is not None:
            Xk = np.concatenate((carry_X, Xk))
            yk = np.concatenate((carry_y, yk))
            carry_X = carry_y = None
        n_full = Xk.shape[0] // batch_size * batch_size
        for b in range(0, n_full, batch_size):
            yield Xk[b:b + batch_size], yk[b:b + batch_size]
        if n_full < Xk.shape[0]:
            carry_X, carry_y = Xk[n_full:], yk[n_full:]
    if carry_X is not None:
        yield carry_X, carry_y


# ----------------------------------------------------------------------------
# augmentation: aug(Xb, rng) -> new array of Xb's shape and dtype
# ----------------------------------------------------------------------------

def _check_image_shape(image_shape):
    try:
        shape = tuple(image_shape)
    except TypeError as e:
        raise TypeError(f"image_shape must be a tuple (H, W) or (H, W, C), "
                        f"got {image_shape!r}") from e
    if len(shape) not in (2, 3) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 1
            for d in shape):
        raise ValueError(f"image_shape must be (H, W) or (H, W, C) of positive ints, "
                         f"got {image_shape!r}")
    return tuple(int(d) for d in shape)


def _check_batch(Xb, rng, need_float=False):
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    Xb = _as_rows(Xb, "Xb", ndim=2)
    if need_float and not np.issubdtype(Xb.dtype, np.floating):
        raise TypeError(f"Xb must be a floating array, got dtype {Xb.dtype}")
    return Xb


class _ImageAugmentation:
    """Base for augmentations that see each row as an image of image_shape."""

    def __init__(self, image_shape):
        self.image_shape = _check_image_shape(image_shape)

    def _images(self, Xb):
        """Xb (m, H*W[*C]) -> view (m, H, W, C) (C = 1 for grey images)."""
        size = math.prod(self.image_shape)
        if Xb.shape[1] != size:
            raise ValueError(f"Xb rows have {Xb.shape[1]} values but image_shape "
                             f"{self.image_shape} has {size}; they must match")
        H, W = self.image_shape[:2]
        C = self.image_shape[2] if len(self.image_shape) == 3 else 1
        return Xb.reshape(Xb.shape[0], H, W, C)


class HorizontalFlip(_ImageAugmentation):
    """Mirror each image left-right with probability p: img[:, ::-1]."""

    def __init__(self, image_shape, p=0.5):
        super().__init__(image_shape)
        p = _real(p, "p")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, Xb, rng):
        Xb = _check_batch(Xb, rng)
        img = self._images(Xb)
        flip = rng.random(Xb.shape[0]) < self.p
        out = img.copy()
        out[flip] = img[flip][:, :, ::-1]
        return out.reshape(Xb.shape)

    def __repr__(self):
        return f"HorizontalFlip(image_shape={self.image_shape}, p={self.p})"


def _shift_images(img, dy, dx):
    """img (k, H, W, C) moved down by dy and right by dx pixels, zero fill."""
    H, W = img.shape[1:3]
    out = np.zeros_like(img)
    if abs(dy) < H and abs(dx) < W:
        out[:, max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
            img[:, max(-dy, 0):H - max(dy, 0), max(-dx, 0):W - max(dx, 0)]
    return out


class RandomShift(_ImageAugmentation):
    """Translate each image by integer (dy, dx), each uniform in [-max_shift, max_shift].

    out[i, j] = img[i - dy, j - dx], 0 where that falls outside the image.
    """

    def __init__(self, image_shape, max_shift=1):
        super().__init__(image_shape)
        if isinstance(max_shift, bool) or not isinstance(max_shift, numbers.Integral):
            raise TypeError(f"max_shift must be an int, got {type(max_shift).__name__}")
        if not 0 <= max_shift < min(self.image_shape[:2]):
            raise ValueError(f"max_shift must be in [0, min(H, W)) = "
                             f"[0, {min(self.image_shape[:2])}), got {max_shift}")
        self.max_shift = int(max_shift)

    def __call__(self, Xb, rng):
        Xb = _check_batch(Xb, rng)
        img = self._images(Xb)
        s = self.max_shift
        d = rng.integers(-s, s + 1, size=(Xb.shape[0], 2))
        out = np.empty_like(img)
        code = (d[:, 0] + s) * (2 * s + 1) + (d[:, 1] + s)  # one group per (dy, dx)
        for c in np.unique(code):
            rows = np.flatnonzero(code == c)
            out[rows] = _shift_images(img[rows], int(d[rows[0], 0]), int(d[rows[0], 1]))
        return out.reshape(Xb.shape)

    def __repr__(self):
        return f"RandomShift(image_shape={self.image_shape}, max_shift={self.max_shift})"


def _rotate_images(img, degrees):
    """Rotate img (k, H, W, C) by degrees (k,) about the image centre, bilinear, zero fill.

    Positive angles turn the image counter-clockwise as displayed (row 0 on
    top), like scipy.ndimage.rotate(reshape=False, order=1, mode="grid-constant").
    Output pixel (i, j) samples the input, bilinearly, at
        si = cy + cos(t) (i - cy) + sin(t) (j - cx)
        sj = cx - sin(t) (i - cy) + cos(t) (j - cx),   (cy, cx) = ((H-1)/2, (W-1)/2)
    with zeros outside the image. Returns float64 (k, H, W, C).
    """
    k, H, W, C = img.shape
    t = np.deg2rad(np.asarray(degrees, dtype=np.float64))[:, None, None]
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    i = np.arange(H, dtype=np.float64)[None, :, None] - cy
    j = np.arange(W, dtype=np.float64)[None, None, :] - cx
    cos, sin = np.cos(t), np.sin(t)
    si = cos * i + sin * j + cy  # (k, H, W)
    sj = -sin * i + cos * j + cx
    i0 = np.floor(si).astype(np.int64)
    j0 = np.floor(sj).astype(np.int64)
    fi = (si - i0)[..., None]
    fj = (sj - j0)[..., None]
    n = np.arange(k)[:, None, None]
    src = img.astype(np.float64, copy=False)
    out = np.zeros((k, H, W, C))
    for di, dj, w in ((0, 0, (1 - fi) * (1 - fj)), (0, 1, (1 - fi) * fj),
                      (1, 0, fi * (1 - fj)), (1, 1, fi * fj)):
        ii, jj = i0 + di, j0 + dj
        ok = (ii >= 0) & (ii < H) & (jj >= 0) & (jj < W)
        vals = src[n, np.clip(ii, 0, H - 1), np.clip(jj, 0, W - 1)]  # (k, H, W, C)
        out += np.where(ok[..., None], w * vals, 0.0)
    return out


class RandomRotation(_ImageAugmentation):
    """Rotate each image by an angle uniform in [-max_degrees, max_degrees].

    Rotation about the image centre with bilinear interpolation and zero fill
    (see _rotate_images); Xb must be floating.
    """

    def __init__(self, image_shape, max_degrees=10.0):
        super().__init__(image_shape)
        max_degrees = _real(max_degrees, "max_degrees")
        if not 0.0 <= max_degrees <= 180.0:
            raise ValueError(f"max_degrees must be in [0, 180], got {max_degrees}")
        self.max_degrees = max_degrees

    def __call__(self, Xb, rng):
        Xb = _check_batch(Xb, rng, need_float=True)
        img = self._images(Xb)
        angles = rng.uniform(-self.max_degrees, self.max_degrees, size=Xb.shape[0])
        return _rotate_images(img, angles).reshape(Xb.shape).astype(Xb.dtype)

    def __repr__(self):
        return f"RandomRotation(image_shape={self.image_shape}, max_degrees={self.max_degrees})"


class GaussianNoise:
    """Add i.i.d. noise: out = Xb + std * N(0, 1), same shape and dtype (floating Xb)."""

    def __init__(self, std):
        std = _real(std, "std")
        if std < 0:
            raise ValueError(f"std must be >= 0, got {std}")
        self.std = std

    def __call__(self, Xb, rng):
        Xb = _check_batch(Xb, rng, need_float=True)
        gen_dtype = Xb.dtype if Xb.dtype in (np.float32, np.float64) else np.float64
        noise = rng.standard_normal(Xb.shape, dtype=gen_dtype)
        return (Xb + self.std * noise).astype(Xb.dtype, copy=False)

    def __repr__(self):
        return f"GaussianNoise(std={self.std})"


class Compose:
    """Apply augmentations in order: augs[-1](... augs[0](Xb, rng) ..., rng)."""

    def __init__(self, augs):
        try:
            augs = list(augs)
        except TypeError as e:
            raise TypeError(f"augs must be a list of callables aug(Xb, rng), "
                            f"got {type(augs).__name__}") from e
        for i, a in enumerate(augs):
            if not callable(a):
                raise TypeError(f"augs[{i}] must be callable as aug(Xb, rng), "
                                f"got {type(a).__name__}")
        self.augs = augs

    def __call__(self, Xb, rng):
        Xb = _check_batch(Xb, rng)
        out = Xb.copy()
        for a in self.augs:
            out = a(out, rng)
        return out

    def __repr__(self):
        return f"Compose([{', '.join(repr(a) for a in self.augs)}])"
