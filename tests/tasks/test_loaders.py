"""Each file loader on small files written here, and each bad-input case with its message."""

import gzip
import json
import re
import struct

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tidian import ConfigError, DataError, load_task
from tidian.tasks import read_idx


def _table(n=60, seed=0):
    rng = np.random.default_rng(seed)
    label = np.array(["cat", "dog", "eel"])[np.arange(n) % 3]
    return pd.DataFrame(
        {
            "size": rng.normal(10, 3, n) + (np.arange(n) % 3),
            "weight": rng.normal(100, 20, n),
            "colour": np.array(["red", "green"])[np.arange(n) % 2],
            "label": label,
        }
    )


def test_csv_standardises_with_train_stats_and_one_hot_encodes(tmp_path):
    path = tmp_path / "animals.csv"
    _table().to_csv(path, index=False)
    task = load_task(path, target="label", seed=1)
    assert task.class_names == ("cat", "dog", "eel")
    assert task.feature_names == ("size", "weight", "colour=green", "colour=red")
    np.testing.assert_allclose(task.train.x[:, :2].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(task.train.x[:, :2].std(0), 1, atol=1e-4)
    onehot = task.train.x[:, 2:]
    assert set(np.unique(onehot)) == {0.0, 1.0} and (onehot.sum(1) == 1).all()
    assert task.source["path"] == str(path)


def test_csv_missing_values_error_names_columns_and_counts(tmp_path):
    frame = _table()
    frame.loc[[1, 4, 7], "weight"] = np.nan
    frame.loc[2, "size"] = np.inf
    frame.loc[[5, 10, 15, 20, 25, 30], "colour"] = None
    path = tmp_path / "gaps.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        load_task(path, target="label")
    msg = str(err.value)
    assert "'size' (1)" in msg and "'weight' (3)" in msg and "'colour' (6)" in msg
    assert "missing='drop'" in msg and "missing='impute'" in msg

    dropped = load_task(path, target="label", missing="drop")
    assert len(dropped.train) + len(dropped.val) + len(dropped.test) == 60 - 10

    imputed = load_task(path, target="label", missing="impute")
    assert len(imputed.train) + len(imputed.val) + len(imputed.test) == 60
    assert "colour=<missing>" in imputed.feature_names
    assert np.isfinite(imputed.train.x).all() and np.isfinite(imputed.test.x).all()


def test_missing_target_column_suggests_close_names(tmp_path):
    path = tmp_path / "a.csv"
    _table().to_csv(path, index=False)
    with pytest.raises(DataError, match=r"no target column 'lable' \(did you mean 'label'\?\)"):
        load_task(path, target="lable")
    with pytest.raises(ConfigError, match="target="):
        load_task(path)


def test_single_class_is_refused(tmp_path):
    frame = _table()
    frame["label"] = "cat"
    path = tmp_path / "one.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="single class|least populated|at least two"):
        load_task(path, target="label")


def test_regression_target_detected_and_split_column_respected(tmp_path):
    frame = _table()
    frame["price"] = np.linspace(1.5, 99.5, 60)
    frame["split"] = ["train"] * 40 + ["val"] * 10 + ["test"] * 10
    path = tmp_path / "prices.csv"
    frame.to_csv(path, index=False)
    task = load_task(path, target="price", drop=["label"], split_column="split")
    assert task.target_kind == "values" and task.metric == "rmse"
    assert (len(task.train), len(task.val), len(task.test)) == (40, 10, 10)
    np.testing.assert_allclose(task.test.y, frame["price"][50:].to_numpy(np.float32))


def test_parquet(tmp_path):
    path = tmp_path / "animals.parquet"
    _table().to_parquet(path)
    task = load_task(path, target="label")
    assert task.input_shape == (4,) and task.n_classes == 3


def test_npz_plain_and_presplit(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3)), np.arange(50) % 2
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    task = load_task(tmp_path / "plain.npz")
    assert task.input_kind == "vector" and len(task.train) == 30
    np.savez(tmp_path / "given.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    given = load_task(tmp_path / "given.npz", val_size=0.25)
    assert (len(given.train), len(given.val), len(given.test)) == (30, 10, 10)
    np.testing.assert_allclose(given.test.x, x[40:].astype(np.float32))
    np.savez(tmp_path / "seq.npz", x=rng.normal(size=(40, 7, 2)), y=np.arange(40) % 2)
    assert load_task(tmp_path / "seq.npz").input_kind == "sequence"


def test_npz_bad_inputs(tmp_path):
    np.savez(tmp_path / "nox.npz", features=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(DataError, match="no array 'x'"):
        load_task(tmp_path / "nox.npz")
    np.savez(tmp_path / "len.npz", x=np.zeros((5, 2)), y=np.arange(4) % 2)
    with pytest.raises(DataError, match="same length"):
        load_task(tmp_path / "len.npz")
    x = np.ones((20, 2))
    x[3, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.arange(20) % 2)
    with pytest.raises(DataError, match=r"'feature 1' \(1 NaN\)"):
        load_task(tmp_path / "nan.npz")
    np.savez(
        tmp_path / "w.npz",
        x_train=np.zeros((8, 3)),
        y_train=np.arange(8) % 2,
        x_test=np.zeros((4, 2)),
        y_test=np.arange(4) % 2,
    )
    with pytest.raises(DataError, match=r"differ in shape \(x_train \(3,\), x_test \(2,\)\)"):
        load_task(tmp_path / "w.npz")
    np.savez(tmp_path / "c.npz", x=np.ones((20, 2)) * 1j, y=np.arange(20) % 2)
    with pytest.raises(DataError, match="holds complex numbers"):
        load_task(tmp_path / "c.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="cannot read"):
        load_task(tmp_path / "broken.npz")


def _write_idx(path, array, gz=False):
    codes = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + struct.pack(
        f">{array.ndim}i", *array.shape
    )
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    with (gzip.open if gz else open)(path, "wb") as f:  # closed: gzip buffers (3.12+)
        f.write(data)


def test_idx_plain_gzip_and_folder(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 5, 5), dtype=np.uint8)
    labels = (np.arange(40) % 4).astype(np.uint8)
    _write_idx(tmp_path / "imgs-idx3-ubyte", images)
    _write_idx(tmp_path / "labels-idx1-ubyte.gz", labels, gz=True)
    np.testing.assert_array_equal(read_idx(tmp_path / "imgs-idx3-ubyte"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "labels-idx1-ubyte.gz"), labels)
    task = load_task(tmp_path / "imgs-idx3-ubyte", labels=str(tmp_path / "labels-idx1-ubyte.gz"))
    assert task.input_kind == "image" and task.input_shape == (1, 5, 5)
    assert task.train.x.max() <= 1.0 and task.n_classes == 4

    folder = tmp_path / "mnist"
    folder.mkdir()
    _write_idx(folder / "train-images-idx3-ubyte.gz", images[:30], gz=True)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", labels[:30], gz=True)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", images[30:], gz=True)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels[30:], gz=True)
    given = load_task(folder, val_size=0.2)
    assert len(given.test) == 10 and len(given.train) + len(given.val) == 30


def test_idx_bad_inputs(tmp_path):
    _write_idx(tmp_path / "a-idx3-ubyte", np.zeros((4, 2, 2), np.uint8))
    _write_idx(tmp_path / "b-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="4 images but .* 3 labels"):
        load_task(tmp_path / "a-idx3-ubyte", labels=str(tmp_path / "b-idx1-ubyte"))
    with pytest.raises(ConfigError, match="labels"):
        load_task(tmp_path / "a-idx3-ubyte")
    raw = (tmp_path / "a-idx3-ubyte").read_bytes()
    (tmp_path / "cut-idx3-ubyte").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut-idx3-ubyte")
    (tmp_path / "head-idx3-ubyte").write_bytes(raw[:9])  # the header itself cut short
    with pytest.raises(DataError, match="its header is cut short"):
        read_idx(tmp_path / "head-idx3-ubyte")
    (tmp_path / "cut-idx3-ubyte.gz").write_bytes(gzip.compress(raw)[:-12])  # gzip cut short
    with pytest.raises(DataError, match="truncated or damaged"):
        read_idx(tmp_path / "cut-idx3-ubyte.gz")


def test_png_folder(tmp_path):
    rng = np.random.default_rng(0)
    for c, cls in enumerate(["circle", "square"]):
        (tmp_path / "shapes" / cls).mkdir(parents=True)
        for i in range(10):
            pixels = rng.integers(0, 100, size=(6, 7), dtype=np.uint8) + 100 * c
            Image.fromarray(pixels, mode="L").save(tmp_path / "shapes" / cls / f"{i}.png")
    task = load_task(tmp_path / "shapes", seed=0)
    assert task.class_names == ("circle", "square")
    assert task.input_shape == (1, 6, 7)  # (channels, height, width)
    assert task.train.x.min() >= 0 and task.train.x.max() <= 1
    rgb = load_task(tmp_path / "shapes", mode="RGB", size=(4, 4))
    assert rgb.input_shape == (3, 4, 4)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "shapes" / "circle" / "odd.png")
    with pytest.raises(DataError, match="size=\\(width, height\\)"):
        load_task(tmp_path / "shapes")
    (tmp_path / "shapes" / "circle" / "odd.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read image"):
        load_task(tmp_path / "shapes", size=(4, 4))


def test_tsv_text_task(tmp_path):
    good = ["great film", "loved it so much", "wonderful acting", "a joy to watch"]
    bad = ["awful film", "hated it", "boring and slow", "a waste of time"]
    rows = [(t, 1) for t in good * 5] + [(t, 0) for t in bad * 5]
    path = tmp_path / "reviews.tsv"
    path.write_text("text\tlabel\n" + "".join(f'{t} "quoted\t{y}\n' for t, y in rows))
    task = load_task(path, text="text", target="label", max_len=8)
    assert task.input_kind == "text" and task.input_shape == (8,)
    assert task.vocab[:2] == ("<pad>", "<unk>") and '"' in task.vocab
    assert task.train.x.dtype == np.int64 and task.n_classes == 2
    # the vocabulary comes from the training split only: every id in train is known
    assert (task.train.x != 1).all()
    headerless = tmp_path / "plain.txt"
    headerless.write_text("".join(f"{t}\t{y}\n" for t, y in rows))
    plain = load_task(headerless, columns=["sentence", "score"], text="sentence", target="score")
    assert plain.n_classes == 2 and len(plain.train) + len(plain.val) + len(plain.test) == 40


def test_jsonl_text_task(tmp_path):
    path = tmp_path / "r.jsonl"
    lines = [{"body": f"item {i} is {'good' if i % 2 else 'bad'}", "y": i % 2} for i in range(30)]
    path.write_text("\n".join(json.dumps(r) for r in lines))
    task = load_task(path, text="body", target="y")
    assert task.input_kind == "text" and task.n_classes == 2


def test_unreadable_and_unknown_files(tmp_path):
    with pytest.raises(DataError, match="neither a built-in task nor an existing file"):
        load_task(tmp_path / "missing.csv")
    (tmp_path / "model.bin").write_bytes(b"\x01\x02")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_task(tmp_path / "model.bin")
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    with pytest.raises(DataError, match="cannot read .* as a table"):
        load_task(tmp_path / "bad.parquet", target="y")
    path = tmp_path / "a.csv"
    _table().to_csv(path, index=False)
    with pytest.raises(ConfigError, match="does not take the option"):
        load_task(path, target="label", text_column="x")
    with pytest.raises(ConfigError, match="missing must be one of"):
        load_task(path, target="label", missing="ignore")


@pytest.mark.parametrize("size", [[0, 0], 8, "big", [100000, 100000], [4.5, 4], [True, 4]])
def test_an_image_size_that_cannot_be_made_is_refused(tmp_path, size):
    (tmp_path / "shapes" / "a").mkdir(parents=True)
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(tmp_path / "shapes" / "a" / "0.png")
    with pytest.raises(
        ConfigError, match=r"size must be \(width, height\): two integers in 1..4096"
    ):
        load_task(tmp_path / "shapes", size=size)


def test_an_image_claiming_a_huge_size_is_refused(tmp_path):
    import zlib as z

    (tmp_path / "shapes" / "a").mkdir(parents=True)

    # a valid PNG header declaring 40000 × 40000 pixels over a few bytes of data
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", z.crc32(kind + data))

    png = b"\x89PNG\r\n\x1a\n" + chunk(
        b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0)
    )
    png += chunk(b"IDAT", z.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    (tmp_path / "shapes" / "a" / "bomb.png").write_bytes(png)
    with pytest.raises(DataError, match="claims more pixels than Pillow reads safely"):
        load_task(tmp_path / "shapes")


def _everyday_table(n=120, seed=0):
    """Columns as people's CSVs have them: numbers, a date, a category, a label."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "amount": rng.normal(50, 10, n).round(2),
            "rate": rng.uniform(0, 1, n).round(3),
            "when": pd.date_range("2021-03-01", periods=n, freq="37h").strftime("%Y-%m-%d"),
            "shop": np.array(["north", "south", "east"])[np.arange(n) % 3],
            "label": np.array(["ok", "chargeback"])[np.arange(n) % 2],
        }
    )


def test_a_semicolon_file_with_decimal_commas_reads_as_its_comma_twin(tmp_path):
    frame = _everyday_table()
    frame.to_csv(tmp_path / "plain.csv", index=False)
    frame.to_csv(tmp_path / "european.csv", index=False, sep=";", decimal=",")
    assert pd.read_csv(tmp_path / "european.csv").shape[1] == 1  # pandas' default: one column
    plain = load_task(tmp_path / "plain.csv", target="label")
    european = load_task(tmp_path / "european.csv", target="label")
    assert european.source["sep"] == ";" and plain.source["sep"] == ","
    assert european.feature_names == plain.feature_names
    np.testing.assert_allclose(european.train.x, plain.train.x, atol=1e-6)
    assert european.columns_read["amount"] == "number (decimal comma)"
    assert european.columns_read["shop"] == "category (3 values)"
    # an explicit separator still wins over the guess
    with pytest.raises(DataError, match="no target column 'label'"):
        load_task(tmp_path / "european.csv", target="label", sep=",")


def test_iso_dates_become_date_parts_that_predict_recomputes(tmp_path):
    frame = _everyday_table()
    frame.to_csv(tmp_path / "shop.csv", index=False)
    task = load_task(tmp_path / "shop.csv", target="label")
    date_features = [f for f in task.feature_names if f.startswith("when.")]
    assert date_features == ["when.year", "when.month", "when.day", "when.weekday"]
    assert len(task.feature_names) == 2 + 4 + 3  # not one column per day
    assert task.columns_read["when"] == "date → year, month, day, weekday"
    assert task.preprocess.columns == ["amount", "rate", "when", "shop"]
    # raw rows (as `tidian predict` gets them) give the training inputs
    rows = np.concatenate([task.train.x, task.val.x, task.test.x])
    again = task.preprocess.apply(pd.read_csv(tmp_path / "shop.csv"))
    assert sorted(map(tuple, np.round(again, 5))) == sorted(map(tuple, np.round(rows, 5)))
    # the parts are the dates' own: undo the standardisation of the month of the first row
    j = task.feature_names.index("when.month")
    raw_month = task.preprocess.to_raw(j, again[:1, j])
    assert round(float(raw_month[0])) == 3  # 2021-03-01
    # times of day add hour and minute
    timed = frame.assign(when=pd.date_range("2021-03-01", periods=120, freq="7h").astype(str))
    timed.to_csv(tmp_path / "timed.csv", index=False)
    parts = load_task(tmp_path / "timed.csv", target="label").columns_read["when"]
    assert parts == "date → year, month, day, weekday, hour, minute"


def test_free_text_and_identifiers_are_refused_with_what_to_do(tmp_path):
    frame = _everyday_table().assign(note=[f"customer said thing {i}" for i in range(120)])
    frame.to_csv(tmp_path / "notes.csv", index=False)
    with pytest.raises(DataError) as err:
        load_task(tmp_path / "notes.csv", target="label")
    message = str(err.value)
    assert "'note' (120 different values in 120 rows)" in message
    assert "text='note'" in message and "drop=['note']" in message
    assert "shop" not in message  # three values: a category
    dropped = load_task(tmp_path / "notes.csv", target="label", drop=["note"])
    assert dropped.columns_read["note"] == "dropped (drop=)"
    kept = load_task(tmp_path / "notes.csv", target="label", categorical=["note"])
    assert sum(f.startswith("note=") for f in kept.feature_names) > 60  # as asked
    # day/month dates are not guessed: refused like text, with the ISO hint
    frame = _everyday_table().assign(
        when=lambda f: pd.to_datetime(f["when"]).dt.strftime("%d/%m/%Y")
    )
    frame.to_csv(tmp_path / "dmy.csv", index=False)
    with pytest.raises(DataError, match="YYYY-MM-DD"):
        load_task(tmp_path / "dmy.csv", target="label")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x1f\x8b" + bytes(40), "is gzip-compressed; name it data.csv.gz"),
        ("a,label\n1,x\n".encode("utf-16"), "not a text table: it holds NUL bytes"),
        (b"a,label\n1,caf\xe9\n2,y\n", "is not UTF-8 text (line 2"),
        (bytes(range(256)) * 4, "not a text table: it holds NUL bytes"),
    ],
)
def test_a_table_file_that_is_not_utf8_text_says_what_it_is(tmp_path, data, message):
    (tmp_path / "data.csv").write_bytes(data)
    with pytest.raises(DataError, match=re.escape(message)):
        load_task(tmp_path / "data.csv", target="label")


def test_an_npz_array_that_is_a_single_value_or_has_no_features_is_refused(tmp_path):
    np.savez(tmp_path / "one.npz", x=np.array(3.0), y=np.array(1))
    with pytest.raises(DataError, match="'x' is a single value"):
        load_task(tmp_path / "one.npz")
    np.savez(tmp_path / "none.npz", x=np.zeros((40, 0)), y=np.arange(40) % 2)
    with pytest.raises(DataError, match=re.escape("x has no features (samples of shape (0,))")):
        load_task(tmp_path / "none.npz")


def test_a_feature_that_is_the_target_under_another_name_is_refused(tmp_path):
    frame = _table().assign(answer=lambda f: f["label"])
    frame.to_csv(tmp_path / "leak.csv", index=False)
    with pytest.raises(DataError, match=re.escape("['answer'] hold the target 'label' itself")):
        load_task(tmp_path / "leak.csv", target="label")
    task = load_task(tmp_path / "leak.csv", target="label", drop=["answer"])
    assert "answer" not in " ".join(task.feature_names)
