"""``graphopt label ...`` through typer's test runner: outputs written as CSV/JSON, the
summary printed, and bad input reported on one line with exit status 2 and nothing written."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from optimizer.label import LabelModel
from optimizer.label.cli import app

pytestmark = pytest.mark.torch

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def files(digits, tmp_path_factory):
    """Held-out digits as .npy and .npz (with labels), and ids of a few 'labelled' rows."""
    folder = tmp_path_factory.mktemp("cli")
    x, y = digits
    np.save(folder / "x.npy", x[1400:1600])
    np.savez(folder / "d.npz", x=x[1400:1600], y=y[1400:1600])
    (folder / "labelled.txt").write_text("\n".join(str(i) for i in range(0, 200, 2)) + "\n")
    return folder


def test_predict_writes_csv_and_embeddings(mlp_onnx, files, digits):
    out, emb = files / "pred.csv", files / "emb.npy"
    result = _run("predict", files / "d.npz", "-m", mlp_onnx, "-o", out, "--embeddings", emb,
                  "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert len(rows) == 200
    assert list(rows[0])[:4] == ["id", "label", "confidence", "given"]
    expected = LabelModel(mlp_onnx).predict(digits[0][1400:1600])
    assert [int(r["label"]) for r in rows] == expected.labels.tolist()
    np.testing.assert_allclose([float(r["p_3"]) for r in rows], expected.probabilities[:, 3],
                               rtol=1e-6)  # fmt: skip
    assert np.load(emb).shape == (200, 32)
    assert "accuracy vs given labels" in result.output


def test_predict_json_has_rows_and_summary(mlp_onnx, files):
    out = files / "pred.json"
    result = _run("predict", files / "x.npy", "-m", mlp_onnx, "-o", out, "--no-progress")
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert len(doc["rows"]) == 200 and doc["summary"]["rows"] == 200
    assert set(doc["rows"][0]) >= {"id", "label", "confidence", "p_0"}


def test_uncertainty_with_mc_dropout(mlp_onnx, files):
    out = files / "unc.csv"
    result = _run("uncertainty", files / "x.npy", "-m", mlp_onnx, "--mc-samples", 8, "--seed", 0,
                  "-o", out, "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert {"least_confidence", "margin", "entropy", "bald", "mc_agreement"} <= set(rows[0])
    assert max(float(r["bald"]) for r in rows) > 0


@pytest.mark.parametrize("strategy", ["margin", "bald", "coreset"])
def test_select_ranks_and_skips_labelled_rows(mlp_onnx, files, strategy):
    out = files / f"select-{strategy}.csv"
    result = _run("select", files / "x.npy", "-m", mlp_onnx, "-k", 7, "--strategy", strategy,
                  "--labeled", files / "labelled.txt", "--mc-samples", 8, "-o", out,
                  "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert [int(r["rank"]) for r in rows] == list(range(1, 8))
    assert all(int(r["id"]) % 2 == 1 for r in rows)  # even ids are labelled
    assert all(r["reason"] for r in rows)
    if strategy != "coreset":
        scores = [float(r["score"]) for r in rows]
        assert scores == sorted(scores, reverse=True)


def test_errors_from_out_of_fold_probabilities(files, digits):
    y = digits[1][:400]
    probs = np.full((400, 10), 0.02)
    probs[np.arange(400), y] = 0.82
    noisy = y.copy()
    noisy[:40] = (noisy[:40] + 1) % 10
    np.save(files / "p.npy", probs)
    np.save(files / "noisy.npy", noisy)
    out = files / "errors.json"
    result = _run("errors", "--probs", files / "p.npy", "--labels", files / "noisy.npy",
                  "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    flagged = {r["id"] for r in json.loads(out.read_text())["rows"]}
    assert flagged == set(range(40))


def test_errors_with_the_model_and_npz_labels(mlp_onnx, files):
    out = files / "errors.csv"
    result = _run("errors", files / "d.npz", "-m", mlp_onnx, "-o", out, "--all", "--no-progress")
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert len(rows) == 200
    quality = [float(r["label_quality"]) for r in rows]
    assert quality == sorted(quality)  # worst label first
    assert "in-sample" in result.output


def test_crowd_with_the_model_as_annotator(mlp_onnx, files, digits):
    rng = np.random.default_rng(0)
    y = digits[1][1400:1600]
    records = files / "records.csv"
    with open(records, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["item", "annotator", "label"])
        for i in range(200):
            for a in rng.choice(5, 3, replace=False):
                label = y[i] if rng.random() < 0.6 else rng.integers(0, 10)
                writer.writerow([i, f"a{a}", label])
    out, skills = files / "crowd.csv", files / "skills.json"
    result = _run("crowd", records, "--method", "all", "-m", mlp_onnx, "--data", files / "x.npy",
                  "--classes", ",".join(map(str, range(10))), "-o", out, "--skills", skills,
                  "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = _rows(out)
    assert len(rows) == 200 and {"label", "confidence", "label_mace"} <= set(rows[0])
    accuracy = np.mean([int(r["label"]) == y[int(r["item"])] for r in rows])
    assert accuracy > 0.9
    table = json.loads(skills.read_text())["rows"]
    model_row = next(r for r in table if r["annotator"] == "model")
    assert model_row["skill_dawid_skene"] == max(r["skill_dawid_skene"] for r in table)


# ---------------------------------------------------------------- bad input


def _fails_cleanly(result, pattern: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: "), result.output
    assert pattern in lines[0], lines[0]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(mlp_onnx, files, tmp_path):
    out = tmp_path / "out.csv"
    _fails_cleanly(_run("predict", tmp_path / "none.npy", "-m", mlp_onnx, "-o", out),
                   "no such file")  # fmt: skip
    np.save(tmp_path / "narrow.npy", np.zeros((3, 63), np.float32))
    _fails_cleanly(_run("predict", tmp_path / "narrow.npy", "-m", mlp_onnx, "-o", out,
                        "--no-progress"), "takes rows of shape (64)")  # fmt: skip
    np.save(tmp_path / "bad_labels.npy", np.array([0, 1, 11]))
    np.save(tmp_path / "p.npy", np.full((3, 10), 0.1))
    _fails_cleanly(_run("errors", "--probs", tmp_path / "p.npy", "--labels",
                        tmp_path / "bad_labels.npy", "-o", out),
                   "label 11 is outside the class set 0..9")  # fmt: skip
    (tmp_path / "r.csv").write_text("item,label\n1,2\n")
    _fails_cleanly(_run("crowd", tmp_path / "r.csv", "-o", out), "missing annotator column")
    _fails_cleanly(_run("predict", files / "x.npy", "-m", mlp_onnx, "-o", tmp_path / "o.txt"),
                   "must end in .csv or .json")  # fmt: skip
    (tmp_path / "f.csv").write_text("a,b\n1,2\n")
    _fails_cleanly(_run("predict", tmp_path / "f.csv", "-m", mlp_onnx, "--columns", "a,c",
                        "-o", out), "missing column(s) 'c'")  # fmt: skip
    np.save(tmp_path / "empty.npy", np.zeros((0, 64), np.float32))
    _fails_cleanly(_run("predict", tmp_path / "empty.npy", "-m", mlp_onnx, "-o", out,
                        "--no-progress"), "empty")  # fmt: skip
    assert not out.exists()
    assert not list(tmp_path.glob(".out.csv*"))  # no temporary file left behind
