"""`tpccma analyze EMB.npz`: your own embeddings in, gap + fixes + tasks out, bad files refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tpccma_lib.app.analyze import split_images
from tpccma_lib.app.cli import main
from tpccma_lib.embeddings import EmbeddingsError
from tpccma_lib.embeddings_io import load_embeddings_npz

N, D, C = 40, 8, 4


def clouds(
    seed: int = 0, offset: float = 2.0, n: int = N, d: int = D, c: int = C, noise: float = 0.4
) -> dict[str, np.ndarray]:
    """Two Gaussian clouds (image, text) around shared class centres, shifted apart along e0:
    ``n`` images and captions of dimension ``d`` in ``c`` classes."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % c
    centres = 3.0 * rng.normal(size=(c, d))
    shift = offset * np.eye(d)[0]
    image = centres[labels] + noise * rng.normal(size=(n, d)) + shift
    text = centres[labels] + noise * rng.normal(size=(n, d)) - shift
    return {
        "image": image.astype(np.float32),
        "text": text.astype(np.float32),
        "labels": labels,
        "class_names": np.asarray([f"class{k}" for k in range(c)]),
        "class_text": (centres - shift).astype(np.float32),
    }


def write(tmp_path, name="emb.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def value(summary, task, metric, method=None):
    rows = summary[(summary.task == task) & (summary.metric == metric)]
    if method is not None:
        rows = rows[rows.method == method]
    assert len(rows) == 1, (task, metric, method, rows)
    return float(rows.value.iloc[0])


def test_analyze_writes_the_tables_and_the_numbers_are_right(tmp_path, capsys):
    arrays = clouds()
    path = write(tmp_path, **arrays)
    out = tmp_path / "out"
    assert main(["analyze", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == ["data", "task", "method", "metric", "value", "unit", "split"]
    assert set(summary.data) == {"emb.npz"}
    assert summary.unit.notna().all() and summary.value.map(np.isfinite).all()
    assert {"gap", "sampling_floor", "bootstrap", "posthoc", "retrieval", "zero_shot"} <= set(
        summary.task
    )
    # the centroid gap is numpy's norm of the mean difference of the L2-normalised rows
    expected = np.linalg.norm(unit(arrays["image"]).mean(0) - unit(arrays["text"]).mean(0))
    assert value(summary, "gap", "centroid_gap") == pytest.approx(expected, rel=1e-5)
    assert value(summary, "bootstrap", "centroid_gap") == pytest.approx(expected, rel=1e-5)
    low, high = (value(summary, "bootstrap", f"centroid_gap_{s}") for s in ("low", "high"))
    assert low < high
    # the offset is far above the split-half floor of one modality
    assert value(summary, "sampling_floor", "centroid_gap", "image halves") < expected
    for direction in ("i2t", "t2i"):
        recalls = [value(summary, "retrieval", f"{direction}_R@{k}") for k in (1, 5, 10)]
        assert 0 <= recalls[0] <= recalls[1] <= recalls[2] <= 1
    # the class prompts sit at the text-side class centres: zero-shot is easy here
    assert value(summary, "zero_shot", "accuracy") > 0.9
    assert value(summary, "zero_shot", "chance") == pytest.approx(1 / C)
    assert np.isfinite(value(summary, "clustering", "ari", "class prompts"))
    assert np.isfinite(value(summary, "clustering", "ari", "captions"))
    report = (out / "report.md").read_text()
    assert "## zero_shot — `emb.npz`" in report and "| accuracy |" in report
    assert "L2 distance" in report and "fraction in [0, 1]" in report
    assert "centroid_gap" in printed and "written:" in printed


def test_posthoc_fixes_are_fitted_on_one_half_and_measured_on_the_other(tmp_path):
    arrays = clouds()
    path = write(tmp_path, **arrays)
    out = tmp_path / "out"
    assert main(["analyze", str(path), "--out", str(out), "--seed", "3"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    fit, held = split_images(N, 0.5, seed=3)
    assert len(fit) == len(held) == N // 2 and not set(fit) & set(held)
    image, text = unit(arrays["image"])[held], unit(arrays["text"])[held]
    baseline = np.linalg.norm(image.mean(0) - text.mean(0))
    assert value(summary, "posthoc", "centroid_gap", "identity") == pytest.approx(baseline, 1e-5)
    # mean_center fitted on the other half: its means, not the held-out ones, are removed
    fit_img, fit_txt = unit(arrays["image"])[fit].mean(0), unit(arrays["text"])[fit].mean(0)
    centred = np.linalg.norm(unit(image - fit_img).mean(0) - unit(text - fit_txt).mean(0))
    assert value(summary, "posthoc", "centroid_gap", "mean_center") == pytest.approx(centred, 1e-5)
    assert value(summary, "posthoc", "centroid_change_pct", "mean_center") < -50
    assert set(summary[summary.task == "posthoc"].split) == {"held-out 20 images (fit on 20)"}


def test_same_seed_same_result_and_no_class_text_no_zero_shot(tmp_path, capsys):
    arrays = clouds()
    del arrays["class_text"]
    path = write(tmp_path, **arrays)
    for run in ("a", "b"):
        assert main(["analyze", str(path), "--out", str(tmp_path / run)]) == 0
    first = (tmp_path / "a" / "summary.csv").read_text()
    assert first == (tmp_path / "b" / "summary.csv").read_text()
    summary = pd.read_csv(tmp_path / "a" / "summary.csv")
    assert "zero_shot" not in set(summary.task)
    assert set(summary[summary.task == "clustering"].method) == {"captions"}
    assert "zero-shot skipped: no class_text" in (tmp_path / "a" / "report.md").read_text()
    assert main(["analyze", str(path), "--out", str(tmp_path / "c"), "--seed", "1"]) == 0
    assert (tmp_path / "c" / "summary.csv").read_text() != first


def test_captions_per_image_and_no_labels(tmp_path):
    arrays = clouds()
    t2i = np.repeat(np.arange(N), 2)
    text = np.concatenate([arrays["text"], arrays["text"] + 0.01])[np.argsort(t2i, kind="stable")]
    path = write(tmp_path, image=arrays["image"], text=text, text_to_image=t2i)
    assert main(["analyze", str(path), "--out", str(tmp_path / "o")]) == 0
    summary = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert not {"zero_shot", "clustering"} & set(summary.task)
    assert "retrieval" in set(summary.task)
    assert "no labels" in (tmp_path / "o" / "report.md").read_text()


def _bad_files():
    good = clouds()
    nan_text = good["text"].copy()
    nan_text[7, 2] = np.nan
    return {
        "missing text": ({k: v for k, v in good.items() if k != "text"}, "missing array 'text'"),
        "mismatched D": ({**good, "text": good["text"][:, :5]}, "'text' has dimension 5"),
        "NaN rows": (
            {**good, "text": nan_text},
            "'text' has 1 row(s) with NaN or inf (first: row 7)",
        ),
        "t2i out of range": (
            {**good, "text_to_image": np.r_[np.arange(N - 1), N]},
            f"'text_to_image' must index images in [0, {N}); entry {N - 1} is {N}",
        ),
        "N != M without t2i": ({**good, "text": good["text"][:30]}, "add text_to_image"),
        "typo": ({**good, "lables": good["labels"]}, "unknown array(s) ['lables']"),
        "label without class": ({**good, "labels": good["labels"] + 1}, "label 4 has no class"),
    }


@pytest.mark.parametrize("case", list(_bad_files()))
def test_a_bad_npz_is_one_line_naming_the_problem(tmp_path, capsys, case):
    arrays, message = _bad_files()[case]
    path = write(tmp_path, **arrays)
    assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("tpccma analyze: error: emb.npz: ") and message in err, err
    assert not (tmp_path / "out" / "summary.csv").exists()


def test_not_an_npz_and_a_bad_fraction_are_refused(tmp_path, capsys):
    junk = tmp_path / "junk.npz"
    junk.write_text("not a zip")
    with pytest.raises(EmbeddingsError, match="junk.npz: not a readable .npz"):
        load_embeddings_npz(junk)
    path = write(tmp_path, **clouds())
    assert main(["analyze", str(path), "--fit-split-fraction", "1.0"]) == 2
    assert "--fit-split-fraction must lie strictly between 0 and 1" in capsys.readouterr().err


def test_loader_normalises_and_keeps_the_layout(tmp_path):
    arrays = clouds()
    loaded = load_embeddings_npz(write(tmp_path, **arrays))
    emb = loaded.embeddings
    assert emb.is_normalized() and loaded.paired_by_default and loaded.has_labels
    np.testing.assert_array_equal(emb.text_to_image, np.arange(N))
    np.testing.assert_array_equal(emb.image_labels, arrays["labels"])
    assert emb.class_names == tuple(f"class{c}" for c in range(C))
    assert loaded.class_text.shape == (C, D)
    np.testing.assert_allclose(np.linalg.norm(loaded.class_text, axis=1), 1, atol=1e-6)
    assert emb.meta["dataset"] == "emb"
