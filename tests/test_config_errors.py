"""Config and data-file errors: each is one line naming the config key and the file, never a
traceback from numpy, zipfile, zlib or the UTF-8 decoder."""
import numpy as np
import pytest

import pydl
from pydl.cli import main
from pydl.config import ConfigError, _infer_loss, load_config, load_data

MODEL = ("[model]\nhidden = [4]\nbatchnorm = false\nkeep_prob = 1.0\n"
         "[training]\nepochs = 1\npatience = 0\n")


def run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *needles):
    """A usage error (exit 2) on one line that holds every needle, and no traceback."""
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def file_config(tmp_path, data: str, extra: str = MODEL):
    """A config reading the data file(s) ``data`` (TOML lines of [data]) from tmp_path."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[data]\nsource = 'file'\n{data}\n{extra}")
    return cfg


def npz_config(tmp_path, name="d.npz", **arrays):
    np.savez(tmp_path / name, **arrays)
    return file_config(tmp_path, f"path = '{tmp_path / name}'")


def xy(m=60, n=3, k=3, seed=0):
    r = np.random.default_rng(seed)
    return r.normal(size=(m, n)), r.integers(0, k, m)


def train(cfg, tmp_path, capsys):
    return run(["train", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], capsys)


# ------------------------------------------------------------------ A: corrupt data .npz

def _corrupt(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[:200]
    c = bytearray(data)
    if how == "bad_crc":
        c[500] ^= 0xFF
    else:  # "bad_deflate": flip bytes inside the compressed stream of X
        for i in range(200, 260):
            c[i] ^= 0xFF
    return bytes(c)


@pytest.mark.parametrize("how, reason", [("truncated", "not a zip file"), ("bad_crc", "CRC-32"),
                                         ("bad_deflate", "decompressing")])
def test_a_corrupt_data_npz_is_an_error_naming_data_path_and_the_file(tmp_path, capsys, how, reason):
    X, y = xy(m=2000)
    (np.savez_compressed if how == "bad_deflate" else np.savez)(tmp_path / "d.npz", X=X, y=y)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(_corrupt((tmp_path / "d.npz").read_bytes(), how))
    code, _, err = train(file_config(tmp_path, f"path = '{bad}'"), tmp_path, capsys)
    one_line_error(code, err, "data.path", str(bad), "not a readable .npz", reason)
    assert not (tmp_path / "o").exists()


def test_a_data_npz_that_is_random_bytes_is_not_called_pickled_data(tmp_path, capsys):
    bad = tmp_path / "random.npz"
    bad.write_bytes(np.random.default_rng(1).bytes(300))
    code, _, err = train(file_config(tmp_path, f"path = '{bad}'"), tmp_path, capsys)
    one_line_error(code, err, "data.path", str(bad), "is not a readable .npz")
    assert "pickle" not in err


def test_a_y_npy_that_is_garbage_names_data_y_path_and_the_file(tmp_path, capsys):
    X, _ = xy()
    np.save(tmp_path / "X.npy", X)
    (tmp_path / "y.npy").write_bytes(b"garbage")
    cfg = file_config(tmp_path, f"x_path = '{tmp_path / 'X.npy'}'\ny_path = '{tmp_path / 'y.npy'}'")
    code, _, err = train(cfg, tmp_path, capsys)
    one_line_error(code, err, "data.y_path", str(tmp_path / "y.npy"), "is not a readable .npy")
    assert "pickle" not in err


# ------------------------------------------------------------------ B: bad label values

@pytest.mark.parametrize("bad, needle", [
    (np.inf, "must be finite numbers; row 59 holds inf"),
    (np.nan, "must be finite numbers; row 59 holds nan"),
    (1e9, "K <= the number of rows (60)"),         # (not a 481 GiB output layer)
    (2.0 ** 62, "K <= the number of rows (60)"),
    (-1.0, "must be integers 0..K-1; row 59 holds -1.0"),
])
def test_bad_label_values_are_an_error_naming_the_labels_and_the_file(tmp_path, bad, needle):
    X, y = xy()
    y = y.astype(float)
    y[-1] = bad
    cfg = npz_config(tmp_path, X=X, y=y)
    with pytest.raises(ConfigError) as e:
        load_data(load_config(str(cfg)), str(cfg))
    msg = str(e.value)
    assert "data.path" in msg and "labels (y)" in msg and str(tmp_path / "d.npz") in msg and needle in msg


def test_integer_labels_beyond_the_rows_are_refused_before_any_model_is_built(tmp_path, capsys):
    X, y = xy()
    y[7] = 2 ** 62
    code, _, err = train(npz_config(tmp_path, X=X, y=y), tmp_path, capsys)
    one_line_error(code, err, "data.path", "labels (y)", str(tmp_path / "d.npz"), "row 7 holds 4611686018427387904")


def test_string_labels_are_an_error_naming_the_labels_and_the_file(tmp_path, capsys):
    X, _ = xy()
    code, _, err = train(npz_config(tmp_path, X=X, y=np.array(list("abc") * 20)), tmp_path, capsys)
    one_line_error(code, err, "data.path", "labels (y)", str(tmp_path / "d.npz"), "must be numbers", "<U1")
    assert "ufunc" not in err


def test_infer_loss_refuses_labels_that_are_not_finite_numbers():
    with pytest.raises(ValueError, match="y must be finite"):
        _infer_loss(np.array([0.0, 1.0, np.inf]))
    with pytest.raises(ValueError, match="y must be numeric"):
        _infer_loss(np.array(["a", "b"]))


def test_labels_up_to_the_number_of_rows_are_accepted(tmp_path):
    X, y = xy(m=10, k=2)
    y[3] = 9  # K = 10 classes for 10 rows: the largest K allowed
    cfg = npz_config(tmp_path, X=X, y=y)
    assert load_data(load_config(str(cfg)))[1].max() == 9


# ------------------------------------------------------------------ C: config encoding

def test_a_config_that_is_not_utf8_says_so_naming_it(tmp_path, capsys):
    cfg = tmp_path / "latin1.toml"
    cfg.write_bytes(b'[data]\nsource = "caf\xe9"\n')
    code, _, err = run(["train", str(cfg), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    one_line_error(code, err, str(cfg), "is not valid TOML", "not UTF-8 text", "line 2")
    assert "codec" not in err


def test_a_model_npz_passed_as_the_config_says_it_is_not_toml(tmp_path, capsys):
    model = tmp_path / "model.npz"
    pydl.mlp([2, 2]).save(str(model))
    code, _, err = run(["train", str(model), "--out", str(tmp_path / "o"), "--quiet"], capsys)
    one_line_error(code, err, str(model), "is not valid TOML", "not UTF-8 text", "zip archive")


def test_a_config_with_a_utf8_byte_order_mark_is_read(tmp_path):
    cfg = tmp_path / "bom.toml"
    cfg.write_bytes(b"\xef\xbb\xbf[data]\nsource = 'moons'\nn_samples = 60\n")
    assert load_config(str(cfg))["data"]["n_samples"] == 60


# ------------------------------------------------------------------ D: empty splits

def test_a_dev_ratio_of_zero_is_refused_before_training(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[data]\nsource = 'moons'\nn_samples = 60\nratios = [1.0, 0.0, 0.0]\n" + MODEL)
    code, _, err = train(cfg, tmp_path, capsys)
    one_line_error(code, err, "data.ratios", "dev a ratio > 0", str(cfg))
    assert not (tmp_path / "o").exists()


def test_a_test_ratio_of_zero_is_refused_by_check_test_split_but_a_config_may_hold_it(tmp_path):
    """pydl tune never uses the test rows, so load_config takes [0.9, 0.1, 0.0]; a command
    that reports test metrics refuses it with check_test_split."""
    from pydl.config import check_test_split

    cfg = tmp_path / "c.toml"
    cfg.write_text("[data]\nsource = 'moons'\nn_samples = 60\nratios = [0.9, 0.1, 0.0]\n")
    c = load_config(str(cfg))
    with pytest.raises(ConfigError, match=r"data.ratios must give test a ratio > 0.*c.toml"):
        check_test_split(c, str(cfg))
    check_test_split(load_config(None))  # "auto": dev and test get rows


def test_a_data_file_too_small_to_split_names_data_path_and_the_file(tmp_path):
    X, y = xy(m=2, k=2)
    y[:] = [0, 1]
    cfg = npz_config(tmp_path, X=X, y=y)
    with pytest.raises(ConfigError, match=r"data.path: the data \(.*d.npz\) in .*c.toml has 2 rows; "
                                          r"a train/dev/test split needs at least 3"):
        load_data(load_config(str(cfg)), str(cfg))


def test_ratios_that_leave_a_tiny_file_no_training_rows_name_data_ratios_and_the_file(tmp_path):
    X, y = xy(m=3, k=2)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    cfg = file_config(tmp_path, f"path = '{tmp_path / 'd.npz'}'\nratios = [0.001, 0.001, 0.998]")
    with pytest.raises(ConfigError, match=r"data.ratios: .*leave no training rows for m=3 \(.*d.npz\)"):
        load_data(load_config(str(cfg)), str(cfg))


# ------------------------------------------------------------------ E: keys named in messages

def test_n_samples_has_an_upper_limit_naming_the_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[data]\nsource = 'moons'\nn_samples = 9223372036854775807\n")
    with pytest.raises(ConfigError, match=r"data.n_samples must be <= 10,000,000, got 9223372036854775807 in .*c.toml"):
        load_config(str(cfg))


def test_spirals_with_more_classes_than_samples_names_both_keys(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[data]\nsource = 'spirals'\nn_classes = 100000\nn_samples = 50\n")
    with pytest.raises(ConfigError, match=r"data.n_classes = 100000 needs data.n_samples >= 100000 .*"
                                          r"got data.n_samples = 50 in .*c.toml"):
        load_config(str(cfg))


def test_coarse_to_fine_needs_top_k_trials_per_round_naming_trials_and_rounds(tmp_path, capsys):
    cfg = tmp_path / "s.toml"
    text = ("[data]\nsource = 'moons'\nn_samples = 60\n" + MODEL + "[search]\nmethod = 'coarse_to_fine'\n"
            "trials = 6\nrounds = 3\n[search.space]\n"
            "\"optimizer.lr\" = { dist = 'loguniform', low = 1e-3, high = 1e-1 }\n")
    cfg.write_text(text)
    code, out, err = run(["tune", str(cfg), "--out", str(tmp_path / "o")], capsys)
    one_line_error(code, err, "search.trials must be >= 9", "search.rounds = 3", "got 6", str(cfg))
    assert "top_k" not in err and not (tmp_path / "o").exists()
    cfg.write_text(text.replace("trials = 6", "trials = 9"))
    load_config(str(cfg))  # 3 per round: accepted


def test_a_csv_that_is_not_numbers_names_data_path_and_the_file(tmp_path, capsys):
    csv = tmp_path / "hdr.csv"
    csv.write_text("a,b,c,label\n1,2,3,0\n")
    code, _, err = train(file_config(tmp_path, f"path = '{csv}'"), tmp_path, capsys)
    one_line_error(code, err, "data.path", str(csv), "could not convert string 'a'", "no header row")


def test_a_one_column_csv_needs_features_and_a_label(tmp_path, capsys):
    csv = tmp_path / "one.csv"
    np.savetxt(csv, xy()[1], delimiter=",")
    code, _, err = train(file_config(tmp_path, f"path = '{csv}'"), tmp_path, capsys)
    one_line_error(code, err, "data.path", str(csv), "has 1 column", "at least 2 columns")
    assert "sizes[0]" not in err


def test_labels_given_as_a_column_are_flattened_and_train(tmp_path, capsys):
    X, y = xy()
    cfg = npz_config(tmp_path, X=X, y=y[:, None])
    _, labels = load_data(load_config(str(cfg)))
    np.testing.assert_array_equal(labels, y)
    code, _, err = train(cfg, tmp_path, capsys)
    assert code == 0, err


def test_labels_of_another_shape_name_the_labels_the_file_and_the_shape(tmp_path):
    X, y = xy()
    cfg = npz_config(tmp_path, X=X, y=y[:, None, None])
    with pytest.raises(ConfigError, match=r"data.path: the labels \(y\) in .*d.npz must have shape .*"
                                          r"got shape \(60, 1, 1\)"):
        load_data(load_config(str(cfg)))


def test_x_and_y_files_of_different_lengths_name_both_files(tmp_path):
    X, y = xy()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y[:50])
    cfg = file_config(tmp_path, f"x_path = '{tmp_path / 'X.npy'}'\ny_path = '{tmp_path / 'y.npy'}'")
    with pytest.raises(ConfigError, match=r"data.y_path: the labels \(y\) in .*y.npy are 50 rows but "
                                          r"X in .*X.npy has 60 rows"):
        load_data(load_config(str(cfg)))


def test_non_finite_features_name_the_file_row_and_column(tmp_path):
    X, y = xy()
    X[5, 1] = np.nan
    cfg = npz_config(tmp_path, X=X, y=y)
    with pytest.raises(ConfigError, match=r"data.path: X in .*d.npz must be finite numbers; row 5, column 1 holds nan"):
        load_data(load_config(str(cfg)))


def test_a_missing_data_file_names_its_key(tmp_path):
    cfg = file_config(tmp_path, f"path = '{tmp_path / 'nope.npz'}'")
    with pytest.raises(ConfigError, match=r"data.path: data file .*nope.npz does not exist"):
        load_data(load_config(str(cfg)))


def test_a_npz_given_as_x_path_says_to_give_it_as_data_path(tmp_path, capsys):
    X, y = xy()
    np.savez(tmp_path / "d.npz", X=X, y=y)
    np.save(tmp_path / "y.npy", y)
    cfg = file_config(tmp_path, f"x_path = '{tmp_path / 'd.npz'}'\ny_path = '{tmp_path / 'y.npy'}'")
    code, _, err = train(cfg, tmp_path, capsys)
    one_line_error(code, err, "data.x_path", "is a .npz", "data.path")
