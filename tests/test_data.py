"""Tests of auditor.data: loading each format, Dataset behaviour, and checks against the model input.

Expected arrays are computed independently of the loader (plain numpy on pixels read back with
Pillow, hand-written label maps), and every error path is matched against its message.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditor.data import Dataset, check_dataset, load_data
from auditor.errors import AuditorError, DataError, OptionError

from .conftest import spec_model

# ----------------------------------------------------------------------------- helpers


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _pixels(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _image_folder(
    root: Path, sizes: dict[str, list[tuple[int, int]]], seed: int = 0
) -> dict[str, list[np.ndarray]]:
    """Class subfolders of RGB PNGs with the given (H, W); returns the pixels per class in file order."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[np.ndarray]] = {}
    for cls, shapes in sizes.items():
        written[cls] = []
        for i, (h, w) in enumerate(shapes):
            px = _pixels(rng, h, w)
            _write_png(root / cls / f"img{i:02d}.png", px)
            written[cls].append(px)
    return written


def _write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


# ----------------------------------------------------------------------------- Dataset


def test_dataset_converts_and_freezes() -> None:
    x = np.arange(12, dtype=np.int32).reshape(4, 3)
    y = np.array([0.0, 2.0, 1.0, 2.0])
    d = Dataset(x, y, class_names=["a", "b", "c"])
    assert d.x.dtype == np.int32 and d.x.flags.c_contiguous  # numeric dtypes kept until check_dataset
    np.testing.assert_array_equal(d.x, x)
    assert d.y.dtype == np.int64 and d.y.tolist() == [0, 2, 1, 2]
    assert d.class_names == ("a", "b", "c") and d.source == "array" and len(d) == 4
    assert not d.x.flags.writeable and not d.y.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        d.x[0, 0] = 1


def test_dataset_keeps_float_dtype_and_leaves_caller_arrays_writeable() -> None:
    x = np.ones((3, 2), dtype=np.float64)
    y = np.array([0, 1, 0])
    d = Dataset(x, y)
    assert d.x.dtype == np.float64
    assert x.flags.writeable and y.flags.writeable  # read-only views, not the caller's arrays
    x[0, 0] = 5.0  # the caller may still write its own array
    f = Dataset(np.asfortranarray(np.ones((3, 2), np.float32)), y)
    assert f.x.flags.c_contiguous


def test_class_counts_subset_and_fingerprint() -> None:
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    d = Dataset(x, [0, 2, 2, 0, 2], class_names=("a", "b", "c"), source="somewhere.npz")
    assert d.class_counts(3).tolist() == [2, 0, 3]
    assert d.class_counts(4).dtype == np.int64 and d.class_counts(4).tolist() == [2, 0, 3, 0]
    s = d.subset([4, 1])
    np.testing.assert_array_equal(s.x, x[[4, 1]])
    assert s.y.tolist() == [2, 2] and s.class_names == d.class_names and s.source == "somewhere.npz"
    m = d.subset(d.y == 0)
    assert m.y.tolist() == [0, 0]

    fp = d.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{64}", fp)
    assert Dataset(x.copy(), [0, 2, 2, 0, 2]).fingerprint() == fp  # names and source do not count
    assert Dataset(x, [0, 2, 2, 0, 1]).fingerprint() != fp
    x2 = x.copy()
    x2[3, 1] += 1e-3
    assert Dataset(x2, [0, 2, 2, 0, 2]).fingerprint() != fp
    assert Dataset(x.astype(np.float64), [0, 2, 2, 0, 2]).fingerprint() != fp
    assert Dataset(x.reshape(5, 2, 1), [0, 2, 2, 0, 2]).fingerprint() != fp


def test_stratified_caps_each_class_deterministically_in_order() -> None:
    y = np.array([0] * 10 + [1] * 3 + [2] * 7)
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(y))
    y = y[perm]
    x = np.arange(len(y), dtype=np.float32)[:, None]  # x[i] = i identifies the sample
    d = Dataset(x, y, class_names=("a", "b", "c"), source="s")
    s = d.stratified(4, seed=3)
    assert s.class_counts(3).tolist() == [4, 3, 4]
    idx = s.x[:, 0].astype(int)
    assert np.all(np.diff(idx) > 0)  # original order kept
    np.testing.assert_array_equal(s.y, y[idx])
    assert np.sum(y[idx] == 1) == 3  # the small class is kept whole
    assert s.class_names == ("a", "b", "c") and s.source == "s"
    again = d.stratified(4, seed=3)
    np.testing.assert_array_equal(again.x, s.x)
    other = [d.stratified(4, seed=k).x[:, 0].tolist() for k in range(5)]
    assert len({tuple(o) for o in other}) > 1  # the seed matters
    assert d.stratified(10) is d


def test_stratified_rejects_nonpositive_cap() -> None:
    d = Dataset(np.zeros((2, 1), np.float32), [0, 1])
    with pytest.raises(OptionError, match="max per class must be >= 1, got 0"):
        d.stratified(0)


# ----------------------------------------------------------------------------- .npz


def test_npz_int_labels_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 1, 4, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 1, 0, 2], dtype=np.int32)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y, class_names=np.array(["cat", "dog", "emu"]))
    d = load_data(path)
    np.testing.assert_array_equal(d.x, x)
    assert d.x.dtype == np.float32 and d.y.dtype == np.int64
    assert d.y.tolist() == y.tolist()
    assert d.class_names == ("cat", "dog", "emu") and d.source == str(path)
    # Given names override the stored ones; the ids stay as stored.
    d2 = load_data(path, class_names=["c0", "c1", "c2"])
    assert d2.class_names == ("c0", "c1", "c2") and d2.y.tolist() == y.tolist()
    assert d2.fingerprint() == d.fingerprint()


def test_npz_string_labels_map_to_sorted_or_given_names(tmp_path: Path) -> None:
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    path = tmp_path / "s.npz"
    np.savez(path, x=x, y=np.array(["zebra", "ant", "zebra", "bee"]))
    d = load_data(path)
    assert d.class_names == ("ant", "bee", "zebra")
    assert d.y.tolist() == [2, 0, 2, 1]
    g = load_data(path, class_names=["zebra", "bee", "ant", "yak"])
    assert g.class_names == ("zebra", "bee", "ant", "yak")
    assert g.y.tolist() == [0, 2, 0, 1]
    # Names stored in the file fix the order too, and bytes labels decode.
    path_b = tmp_path / "b.npz"
    np.savez(
        path_b, x=x, y=np.array([b"ant", b"bee", b"ant", b"bee"]), class_names=np.array([b"bee", b"ant"])
    )
    b = load_data(path_b)
    assert b.class_names == ("bee", "ant") and b.y.tolist() == [1, 0, 1, 0]


def test_npz_integral_float_labels_become_int(tmp_path: Path) -> None:
    path = tmp_path / "f.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.array([1.0, 0.0, 1.0]))
    d = load_data(path)
    assert d.y.dtype == np.int64 and d.y.tolist() == [1, 0, 1]
    assert d.x.dtype == np.float64  # float dtype kept until check_dataset casts it


# ----------------------------------------------------------------------------- image folders


def test_image_folder_nchw_nhwc_mean_std_against_numpy(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    written = _image_folder(root, {"dog": [(5, 7), (5, 7)], "cat": [(5, 7)]})
    (root / "cat" / "notes.txt").write_text("not an image")  # skipped
    (root / "dog" / ".DS_Store").write_bytes(b"\0\0")  # skipped
    (root / ".ipynb_checkpoints").mkdir()  # hidden folder: not a class
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]

    nhwc = load_data(root, layout="NHWC", mean=mean, std=std)
    nchw = load_data(root, layout="NCHW", mean=mean, std=std)

    # Classes are the sorted subfolder names; files in sorted order within each class.
    assert nhwc.class_names == ("cat", "dog") and nhwc.source == str(root)
    assert nhwc.y.tolist() == [0, 1, 1]
    raw = np.stack([written["cat"][0], written["dog"][0], written["dog"][1]]).astype(np.float64)
    expected = (raw / 255.0 - np.array(mean)) / np.array(std)
    assert nhwc.x.shape == (3, 5, 7, 3) and nhwc.x.dtype == np.float32
    np.testing.assert_allclose(nhwc.x, expected, rtol=1e-5, atol=1e-5)
    assert nchw.x.shape == (3, 3, 5, 7) and nchw.x.flags.c_contiguous
    np.testing.assert_allclose(nchw.x, expected.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(nchw.y, nhwc.y)


def test_image_folder_resize_scale_and_grayscale(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _image_folder(root, {"a": [(6, 6), (9, 4)], "b": [(12, 10)]}, seed=1)
    with pytest.raises(DataError, match=r"images differ in size .*pass image_size \(--image-size HxW\)"):
        load_data(root)

    d = load_data(root, image_size=(4, 5), scale=1.0)
    assert d.x.shape == (3, 3, 4, 5) and d.y.tolist() == [0, 0, 1]
    files = [root / "a" / "img00.png", root / "a" / "img01.png", root / "b" / "img00.png"]
    for i, f in enumerate(files):
        with Image.open(f) as im:
            ref = np.asarray(im.convert("RGB").resize((5, 4), Image.Resampling.BILINEAR), dtype=np.float32)
        np.testing.assert_array_equal(d.x[i], ref.transpose(2, 0, 1))

    g = load_data(root, image_size=(4, 5), grayscale=True, layout="NHWC", mean=[0.5], std=[0.25])
    assert g.x.shape == (3, 4, 5, 1)
    with Image.open(files[2]) as im:
        ref_l = np.asarray(im.convert("L").resize((5, 4), Image.Resampling.BILINEAR), dtype=np.float64)
    np.testing.assert_allclose(g.x[2, :, :, 0], (ref_l / 255 - 0.5) / 0.25, rtol=1e-5, atol=1e-5)


def test_image_folder_with_given_class_names_keeps_model_ids(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _image_folder(root, {"ant": [(3, 3)], "cow": [(3, 3), (3, 3)]})
    d = load_data(root, class_names=["ant", "bee", "cow"])
    assert d.class_names == ("ant", "bee", "cow")
    assert d.y.tolist() == [0, 2, 2]  # "bee" has no folder: absent class, not an error


# ----------------------------------------------------------------------------- CSV


def test_csv_string_labels_round_trip(tmp_path: Path) -> None:
    path = _write_csv(
        tmp_path / "t.csv",
        "f1,species,f2\n1.5,setosa,2\n-3,virginica,4e-1\n0,setosa,7\n\n",
        encoding="utf-8-sig",
    )  # a BOM, a label column in the middle, a blank last line
    d = load_data(path, label_column="species")
    assert d.x.dtype == np.float32 and d.x.shape == (3, 2)
    np.testing.assert_array_equal(d.x, np.array([[1.5, 2], [-3, 0.4], [0, 7]], dtype=np.float32))
    assert d.class_names == ("setosa", "virginica") and d.y.tolist() == [0, 1, 0]
    g = load_data(path, label_column="species", class_names=["virginica", "versicolor", "setosa"])
    assert g.y.tolist() == [2, 0, 2] and g.class_names == ("virginica", "versicolor", "setosa")


def test_csv_numeric_labels(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "n.csv", "a,b,label\n1,2,3\n4,5,0.0\n6,7, 1 \n")
    d = load_data(path)
    assert d.y.tolist() == [3, 0, 1] and d.class_names is None
    # A label that is not a whole number is a class name, not an id.
    named = load_data(_write_csv(tmp_path / "m.csv", "a,label\n1,2\n2,2.5\n3,2\n"))
    assert named.class_names == ("2", "2.5") and named.y.tolist() == [0, 1, 0]
    np.testing.assert_array_equal(d.x, np.array([[1, 2], [4, 5], [6, 7]], dtype=np.float32))


# ----------------------------------------------------------------------------- check_dataset


def test_check_dataset_casts_once_and_passes_through() -> None:
    x = np.random.default_rng(0).normal(size=(4, 1, 8, 8)).astype(np.float32)
    d = Dataset(x, [0, 1, 1, 0], class_names=("a", "b"))
    same = check_dataset(d, spec_model((None, 1, 8, 8), k=2))
    np.testing.assert_array_equal(same.features["x"], x)
    assert np.shares_memory(same.features["x"], d.x) and same.checked_for  # no copy when nothing changes
    model = spec_model(("batch", 1, None, None), k=2)
    dyn = check_dataset(d, model)
    assert check_dataset(dyn, model) is dyn  # checked once: passed through
    wide = check_dataset(d, spec_model((1, 1, 8, 8), np.float64, k=5))
    assert wide.x.dtype == np.float64 and not wide.x.flags.writeable
    np.testing.assert_array_equal(wide.x, x.astype(np.float64))
    assert wide.class_names == ("a", "b") and wide.source == d.source  # fewer names than classes: kept
    assert wide.class_counts(5).tolist() == [2, 2, 0, 0, 0]  # absent classes allowed


def test_check_dataset_attaches_given_class_names() -> None:
    d = Dataset(np.zeros((2, 3), np.float32), [0, 2])
    out = check_dataset(d, spec_model((None, 3)), class_names=["x", "y", "z"])
    assert out.class_names == ("x", "y", "z")
    np.testing.assert_array_equal(out.x, d.x)
    named = Dataset(np.zeros((2, 3), np.float32), [0, 1], class_names=("x", "y"))
    assert check_dataset(named, spec_model((None, 3)), class_names=["x", "y", "z"]).class_names == ("x", "y", "z")


def test_check_dataset_float16_overflow() -> None:
    d = Dataset(np.array([[1e6, 0.0]], np.float32), [0])
    with pytest.raises(DataError, match=r"data x overflows float16, the exported model's input type \(largest magnitude 1e\+06\)"):
        check_dataset(d, spec_model((None, 2), np.float16, k=2))


# ----------------------------------------------------------------------------- errors


def _npz(tmp_path: Path, **arrays: np.ndarray) -> Path:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


def _check(
    x: np.ndarray, y: list[int], shape: tuple[int | None, ...], k: int = 3, **kw: object
) -> Callable[[], object]:
    return lambda: check_dataset(Dataset(x, y), spec_model(shape, k=k), **kw)  # type: ignore[arg-type]


def _nan_data() -> np.ndarray:
    x = np.zeros((5, 4), np.float32)
    x[2, 1] = x[2, 3] = np.nan
    x[4, 0] = np.nan
    return x


def _inf_data() -> np.ndarray:
    x = np.zeros((5, 1, 2, 2), np.float32)
    x[3, 0, 1, 1] = -np.inf
    return x


def _empty_class(tmp_path: Path) -> Path:
    _image_folder(tmp_path / "imgs", {"a": [(4, 4)]})
    (tmp_path / "imgs" / "b").mkdir()
    (tmp_path / "imgs" / "b" / "readme.md").write_text("no images here")
    return tmp_path / "imgs"


BAD: list[tuple[str, Callable[[Path], Callable[[], object]], str]] = [
    (
        "missing-file",
        lambda t: lambda: load_data(t / "nope.npz"),
        r"^data file '.*nope\.npz' does not exist; check the path$",
    ),
    (
        "bad-extension",
        lambda t: lambda: load_data(_write_csv(t / "d.parquet", "x")),
        r"unsupported data format '\.parquet'; give an \.npz file .*\.csv file .*one subfolder of images "
        r"per class",
    ),
    (
        "npz-missing-keys",
        lambda t: lambda: load_data(_npz(t, features=np.zeros((2, 2)), labels=np.zeros(2))),
        r"has arrays \['features', 'labels'\]; expected the samples \('x', or one array per model input named "
        r"after it\) and 'y' \(labels\)",
    ),
    (
        "npz-pickle",
        lambda t: lambda: load_data(_npz(t, x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))),
        r"holds object arrays \(pickled Python objects\); the auditor reads plain arrays only",
    ),
    (
        "npz-single-array",
        lambda t: (
            lambda: (
                np.save(t / "a.npy", np.zeros(3)),
                (t / "a.npy").rename(t / "a.npz"),
                load_data(t / "a.npz"),
            )
        ),
        r"holds a single array, not an \.npz archive",
    ),
    (
        "npz-length-mismatch",
        lambda t: lambda: load_data(_npz(t, x=np.zeros((3, 2)), y=np.zeros(2, int))),
        r"x has 3 samples but y has 2 labels",
    ),
    (
        "npz-fractional-labels",
        lambda t: lambda: load_data(_npz(t, x=np.zeros((3, 2)), y=np.array([0, 1.5, 1]))),
        r"y holds 1 non-integer labels \(first: 1\.5 at sample 1\)",
    ),
    (
        "npz-unknown-label",
        lambda t: (
            lambda: load_data(_npz(t, x=np.zeros((2, 2)), y=np.array(["a", "q"])), class_names=["a", "b"])
        ),
        r"labels \['q'\] are not among the class names \['a', 'b'\]",
    ),
    (
        "csv-missing-column",
        lambda t: lambda: load_data(_write_csv(t / "c.csv", "a,b,target\n1,2,x\n")),
        r"has no column 'label' \(columns: a, b, target\); name the label column with --label-column",
    ),
    (
        "csv-non-numeric",
        lambda t: lambda: load_data(_write_csv(t / "c.csv", "a,label\n1,x\nfoo,y\n")),
        r"row 3: could not convert string to float: 'foo'; every column but 'label' must be numeric",
    ),
    (
        "csv-ragged",
        lambda t: lambda: load_data(_write_csv(t / "c.csv", "a,b,label\n1,2,x\n1,x\n")),
        r"row 3 has 2 fields but the header has 3",
    ),
    (
        "csv-no-rows",
        lambda t: lambda: load_data(_write_csv(t / "c.csv", "a,label\n")),
        r"has a header but no samples",
    ),
    (
        "images-empty-class",
        lambda t: lambda: load_data(_empty_class(t)),
        r"'.*imgs.b' holds no images \(.*\.png.*\); add its images or remove the empty class folder",
    ),
    (
        "images-no-subfolders",
        lambda t: lambda: (t.joinpath("flat").mkdir(), load_data(t / "flat")),
        r"has no class subfolders; an image folder needs one subfolder of images per class",
    ),
    (
        "shape-mismatch-flat",
        lambda t: _check(np.zeros((2, 64), np.float32), [0, 1], (None, 1, 8, 8)),
        r"^data x has sample shape \(64,\), model input 'x' expects \(1, 8, 8\) "
        r"\(batch axis excluded\); it has as many values per sample: reshape x to \(N, 1, 8, 8\)$",
    ),
    (
        "shape-mismatch-nchw-vs-nhwc",
        lambda t: _check(np.zeros((2, 3, 8, 8), np.float32), [0, 1], (None, 8, 8, 3)),
        r"sample shape \(3, 8, 8\), model input 'x' expects \(8, 8, 3\) .*--layout NHWC",
    ),
    (
        "shape-mismatch-nhwc-vs-nchw",
        lambda t: _check(np.zeros((2, 8, 8, 3), np.float32), [0, 1], (None, 3, None, None)),
        r"sample shape \(8, 8, 3\), model input 'x' expects \(3, \?, \?\) .*--layout NCHW",
    ),
    (
        "shape-mismatch-rank",
        lambda t: _check(np.zeros((2, 5), np.float32), [0, 1], (None, 4)),
        r"sample shape \(5,\), model input 'x' expects \(4,\) \(batch axis excluded\); "
        r"reshape the data to the model's input$",
    ),
    (
        "label-out-of-range",
        lambda t: _check(np.zeros((5, 2), np.float32), [0, 7, 2, -1, 7], (None, 2)),
        r"data has 3 of 5 labels outside 0\.\.2 \(first: 7 at sample 1\); the model has 3 classes",
    ),
    (
        "nan-count-first-index",
        lambda t: _check(_nan_data(), [0, 1, 2, 0, 1], (None, 4)),
        r"data x holds 3 non-finite values \(NaN or inf\) in 2 samples, first in sample 2; clean or drop",
    ),
    (
        "inf",
        lambda t: _check(_inf_data(), [0, 1, 2, 0, 1], (None, 1, 2, 2)),
        r"data x holds 1 non-finite values \(NaN or inf\) in 1 samples, first in sample 3",
    ),
    (
        "class-names-length",
        lambda t: _check(np.zeros((2, 2), np.float32), [0, 1], (None, 2), class_names=["a", "b"]),
        r"2 class names given but the model has 3 classes; give one name per class",
    ),
    (
        "data-class-names-too-many",
        lambda t: (
            lambda: check_dataset(
                Dataset(np.zeros((2, 2), np.float32), [0, 1], class_names=("a", "b", "c", "d")),
                spec_model((None, 2)),
                name="gradient data",
            )
        ),
        r"gradient data names 4 classes but the model has 3",
    ),
    (
        "class-names-disagree",
        lambda t: (
            lambda: check_dataset(
                Dataset(np.zeros((2, 2), np.float32), [0, 1], class_names=("a", "b")),
                spec_model((None, 2)),
                class_names=["a", "c", "b"],
            )
        ),
        r"data calls class 1 'b' but the class names given call it 'c'",
    ),
    (
        "dataset-string-labels",
        lambda t: lambda: Dataset(np.zeros((2, 2)), np.array(["a", "b"])),
        r"y has dtype <U1; labels must be integers 0\.\.K-1",
    ),
    (
        "dataset-empty",
        lambda t: lambda: Dataset(np.zeros((0, 2)), np.zeros(0, int)),
        r"the data set has no samples",
    ),
    (
        "dataset-1d-x",
        lambda t: lambda: Dataset(np.zeros(3), [0, 1, 0]),
        r"x has shape \(3,\); expected \(N, features\.\.\.\)",
    ),
]


@pytest.mark.parametrize(("make", "message"), [(m, msg) for _, m, msg in BAD], ids=[i for i, _, _ in BAD])
def test_bad_inputs_raise_data_error(
    tmp_path: Path, make: Callable[[Path], Callable[[], object]], message: str
) -> None:
    with pytest.raises(DataError, match=message) as info:
        make(tmp_path)()
    text = str(info.value)
    assert "\n" not in text  # one line, for the CLI
    assert isinstance(info.value, AuditorError) and isinstance(info.value, ValueError)


BAD_OPTIONS: list[tuple[str, dict[str, object], str]] = [
    ("layout", {"layout": "CHW"}, r"unknown image layout 'CHW'; choose one of NCHW, NHWC"),
    (
        "mean-length",
        {"mean": [0.1, 0.2]},
        r"--mean has 2 values but the images have 3 channel\(s\); give 1 or 3",
    ),
    ("std-zero", {"std": [1.0, 0.0, 1.0]}, r"--std must be positive"),
    ("image-size", {"image_size": (0, 4)}, r"image size must be two positive integers \(height, width\)"),
    ("duplicate-names", {"class_names": ["a", "a"]}, r"class names \['a', 'a'\] repeat a name"),
]


@pytest.mark.parametrize(
    ("kwargs", "message"), [(k, m) for _, k, m in BAD_OPTIONS], ids=[i for i, _, _ in BAD_OPTIONS]
)
def test_bad_image_options_raise_option_error(
    tmp_path: Path, kwargs: dict[str, object], message: str
) -> None:
    _image_folder(tmp_path / "imgs", {"a": [(4, 4)], "b": [(4, 4)]})
    with pytest.raises(OptionError, match=message):
        load_data(tmp_path / "imgs", **kwargs)  # type: ignore[arg-type]
