"""Batch inference and Monte Carlo dropout on real data: the digits MLP trained and exported
here, run through graphopt's optimized graph and compared with a plain onnxruntime run."""

from __future__ import annotations

import csv

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from optimizer.label import (
    IterableDataset,
    LabelDataError,
    LabelModel,
    LabelModelError,
    NpzDataset,
    open_dataset,
)
from optimizer.label.inference import softmax

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def labeller(mlp_onnx) -> LabelModel:
    return LabelModel(mlp_onnx)


@pytest.fixture(scope="module")
def plain(mlp_onnx, digits):
    """Logits and penultimate activations from plain onnxruntime on the exported file."""
    model = onnx.load(mlp_onnx)
    model.graph.output.append(helper.make_tensor_value_info("relu_1", TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    logits, emb = session.run(["logits", "relu_1"], {"x": digits[0]})
    return logits, emb


def test_predictions_equal_a_plain_onnxruntime_run(labeller, plain, digits):
    x, y = digits
    pred = labeller.predict(x, batch_size=128, chunk_size=500)
    logits, emb = plain
    np.testing.assert_allclose(pred.probabilities, softmax(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pred.labels, logits.argmax(axis=1))
    # Embeddings come from the penultimate layer, found automatically.
    assert labeller.embedding_name == "relu_1"
    np.testing.assert_allclose(pred.embeddings, emb, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pred.ids, np.arange(len(x)))
    # The model is a real classifier: accurate on the rows it never saw.
    assert (pred.labels[1400:] == y[1400:]).mean() > 0.9


def test_the_prediction_graph_is_optimized_and_carries_no_dropout(labeller):
    optimized = labeller.prediction_model()
    ops = [n.op_type for n in optimized.graph.node]
    assert "Dropout" not in ops and labeller.num_dropouts == 2
    assert [o.name for o in optimized.graph.output] == ["logits", "graphopt_label_embedding"]


def test_chunking_does_not_change_the_results(labeller, digits):
    x = digits[0][:300]
    seen: list[int] = []
    small = labeller.predict(x, batch_size=7, chunk_size=31, progress=seen.append)
    large = labeller.predict(x, batch_size=1000, chunk_size=10_000)
    assert seen == [31] * 9 + [21]  # the progress callback hears of every chunk
    np.testing.assert_allclose(small.probabilities, large.probabilities, rtol=1e-6, atol=1e-7)


def test_named_embedding_and_no_embedding(mlp_onnx, digits, plain):
    named = LabelModel(mlp_onnx, embedding="linear")  # the first Gemm's output, pre-ReLU
    pred = named.predict(digits[0][:50])
    assert pred.embeddings.shape == (50, 64)
    none = LabelModel(mlp_onnx, embedding=None).predict(digits[0][:50])
    assert none.embeddings is None
    np.testing.assert_allclose(none.probabilities, pred.probabilities, rtol=1e-6, atol=1e-7)
    with pytest.raises(LabelModelError, match="no tensor named"):
        LabelModel(mlp_onnx, embedding="missing_tensor")


def test_mc_dropout_samples_differ_and_their_mean_is_stable(labeller, digits):
    x = digits[0][1400:1600]
    a = labeller.mc_dropout(x, samples=64, seed=1, batch_size=50, keep_samples=True)
    b = labeller.mc_dropout(x, samples=64, seed=2, batch_size=50)
    assert a.samples.shape == (64, 200, 10)
    # Samples of the same item differ (dropout is on) ...
    spread = np.abs(a.samples[0] - a.samples[1]).max(axis=1)
    assert (spread > 1e-3).mean() > 0.5
    assert a.stats.bald.max() > 0
    # ... but the mean over 64 samples barely moves between independent seeds, and it
    # agrees with the deterministic prediction on nearly every row.
    assert np.abs(a.mean - b.mean).mean() < 0.02
    det = labeller.predict(x, embeddings=False).probabilities
    assert (a.mean.argmax(axis=1) == det.argmax(axis=1)).mean() > 0.95
    np.testing.assert_allclose(a.mean, a.samples.mean(axis=0))


def test_mc_dropout_draws_all_samples_of_a_batch_in_one_run(mlp_onnx, digits):
    model = LabelModel(mlp_onnx)
    x = digits[0][:120]
    model.mc_dropout(x, samples=16, batch_size=50, chunk_size=1000)
    assert model.engine.session_runs == 3  # ceil(120 / 50): one run per batch, not per sample


def test_mc_dropout_is_reproducible_with_a_seed(mlp_onnx, digits):
    x = digits[0][:40]
    first = LabelModel(mlp_onnx).mc_dropout(x, samples=8, seed=7, keep_samples=True)
    again = LabelModel(mlp_onnx).mc_dropout(x, samples=8, seed=7, keep_samples=True)
    np.testing.assert_array_equal(first.samples, again.samples)


def test_unoptimized_path_gives_the_same_predictions(mlp_onnx, digits):
    x = digits[0][:200]
    fast = LabelModel(mlp_onnx).predict(x)
    slow = LabelModel(mlp_onnx, optimize=False).predict(x)
    np.testing.assert_allclose(fast.probabilities, slow.probabilities, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- dataset formats


def test_npy_npz_csv_and_iterable_sources_agree(labeller, digits, tmp_path):
    x, y = digits
    x, y = x[:257], y[:257]
    ref = labeller.predict(x).probabilities
    np.save(tmp_path / "x.npy", x)
    np.savez_compressed(tmp_path / "d.npz", x=x, y=y)
    with open(tmp_path / "d.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([f"f{k}" for k in range(64)] + ["label", "name"])
        for row, label in zip(x, y):
            writer.writerow([repr(float(v)) for v in row] + [int(label), f"img{label}"])
    sources = {
        "npy": tmp_path / "x.npy",
        "npz": tmp_path / "d.npz",
        "csv": open_dataset(tmp_path / "d.csv", label_column="label", id_column="name"),
        "iterable": IterableDataset([(row, int(label)) for row, label in zip(x, y)]),
    }
    for name, source in sources.items():
        pred = labeller.predict(source, chunk_size=100)
        np.testing.assert_allclose(pred.probabilities, ref, rtol=1e-5, atol=1e-6, err_msg=name)
        if name != "npy":
            np.testing.assert_array_equal(pred.given_indices(), y, err_msg=name)
    csv_pred = labeller.predict(sources["csv"])
    assert csv_pred.ids[0] == f"img{y[0]}"


def test_npz_members_stream_in_chunks(digits, tmp_path):
    x = digits[0][:103]
    np.savez_compressed(tmp_path / "d.npz", data=x)
    dataset = NpzDataset(tmp_path / "d.npz")
    chunks = list(dataset.chunks(25))
    assert [len(c) for c in chunks] == [25, 25, 25, 25, 3]
    np.testing.assert_array_equal(np.concatenate([c.x for c in chunks]), x)


def _image_model(trained_mlp) -> onnx.ModelProto:
    """The MLP behind a Flatten, reading (batch, 1, 8, 8) images."""
    from benchmarks.label.digits import mlp_to_onnx

    model = mlp_to_onnx(trained_mlp)
    graph = model.graph
    graph.node.insert(0, helper.make_node("Flatten", ["image"], ["x"], axis=1))
    del graph.input[:]
    graph.input.append(
        helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])
    )
    onnx.checker.check_model(model)
    return model


def test_image_folder_with_class_subfolders(trained_mlp, digits, tmp_path):
    Image = pytest.importorskip("PIL.Image", reason="reading images needs Pillow")

    x, y = digits
    rows = range(1400, 1440)
    for i in rows:
        folder = tmp_path / "images" / str(y[i])
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(x[i].reshape(8, 8) * 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    labeller = LabelModel(_image_model(trained_mlp))
    pred = labeller.predict(tmp_path / "images")
    assert len(pred) == 40
    # Files sort by class folder, then name; rebuild that order for the reference.
    order = sorted(rows, key=lambda i: (str(y[i]), f"{i:04d}"))
    quantised = np.round(x[order] * 255) / 255
    ref = LabelModel(_image_model(trained_mlp)).predict(quantised.reshape(-1, 1, 8, 8))
    np.testing.assert_allclose(pred.probabilities, ref.probabilities, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pred.given_indices(), y[order])
    assert pred.ids[0] == f"{y[order[0]]}/{order[0]:04d}.png"


# ---------------------------------------------------------------- bad input


def test_shape_mismatch_is_a_clear_error(labeller, digits):
    with pytest.raises(
        LabelDataError, match=r"rows have shape \(63,\).*takes rows of shape \(64\)"
    ):
        labeller.predict(digits[0][:10, :63])


def test_empty_dataset_is_a_clear_error(labeller, tmp_path):
    np.save(tmp_path / "empty.npy", np.zeros((0, 64), np.float32))
    with pytest.raises(LabelDataError, match="empty"):
        labeller.predict(tmp_path / "empty.npy")
    (tmp_path / "empty.csv").write_text(",".join(f"f{k}" for k in range(64)) + "\n")
    with pytest.raises(LabelDataError, match="empty"):
        labeller.predict(tmp_path / "empty.csv")


def test_missing_columns_and_bad_cells_are_clear_errors(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,3\n4,x,5\n")
    with pytest.raises(LabelDataError, match="missing column.*'c'.*columns: a, b, label"):
        open_dataset(tmp_path / "d.csv", columns=["a", "c"])
    dataset = open_dataset(tmp_path / "d.csv", label_column="label")
    with pytest.raises(LabelDataError, match=r"d.csv:3: column 'b' holds 'x'"):
        list(dataset.chunks())


def test_labels_outside_the_class_set_are_clear_errors(labeller, digits):
    x, y = digits
    bad = y[:20].copy()
    bad[3] = 12
    pred = labeller.predict(open_dataset(x[:20], labels=bad))
    with pytest.raises(LabelDataError, match="label 12 is outside the class set 0..9"):
        pred.given_indices()


def test_model_without_dropout_cannot_do_mc(trained_mlp, digits, tmp_path):
    from benchmarks.label.digits import mlp_to_onnx

    model = mlp_to_onnx(trained_mlp)
    keep = [n for n in model.graph.node if n.op_type != "Dropout"]
    for n in keep:
        n.input[:] = [i.replace("drop", "relu") for i in n.input]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    with pytest.raises(LabelModelError, match="no Dropout node"):
        LabelModel(model).mc_dropout(digits[0][:5])


def test_unsupported_format_and_missing_file(labeller, tmp_path):
    (tmp_path / "data.parquet").write_bytes(b"x")
    with pytest.raises(LabelDataError, match="unsupported dataset format"):
        labeller.predict(tmp_path / "data.parquet")
    with pytest.raises(LabelDataError, match="no such file"):
        labeller.predict(tmp_path / "nothing.npy")
