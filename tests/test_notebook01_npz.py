"""Notebook 01 on your own embeddings: ``embeddings_file=<.npz>`` replaces the mini-CLIP.

The notebook is run through papermill (as ``tpccma report`` does) on a small ``.npz`` in the
layout of :mod:`tpccma_lib.embeddings_io`; the numbers it prints are recomputed here from the
same arrays with numpy (the centroid gap) and the same seeded split as ``tpccma analyze``.
"""

from __future__ import annotations

import re

import nbformat
import numpy as np
import pytest

from tests.test_analyze import clouds as analyze_clouds
from tpccma_lib.app.analyze import split_images
from tpccma_lib.app.notebooks import kernel_env, notebook_parameters, run_notebook
from tpccma_lib.notebook import fmt

N, D, C = 60, 16, 3
NAME = "01_gap_decomposition"


def clouds(seed: int = 0) -> dict[str, np.ndarray]:
    """test_analyze's labelled clouds at this test's size (no class_text: the notebook's
    Sections 1-4 need none)."""
    arrays = analyze_clouds(seed, offset=1.5, n=N, d=D, c=C, noise=0.5)
    arrays.pop("class_text")
    return arrays


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def centroid_gap(image: np.ndarray, text: np.ndarray) -> float:
    return float(np.linalg.norm(image.mean(0) - text.mean(0)))


def test_notebook_01_declares_embeddings_file_defaulting_to_none():
    assert "embeddings_file" in notebook_parameters(NAME)
    import papermill as pm

    from tpccma_lib.app.notebooks import notebook_dir

    declared = pm.inspect_notebook(str(notebook_dir() / f"{NAME}.ipynb"))
    assert declared["embeddings_file"]["default"] == "None"


@pytest.mark.slow
def test_notebook_01_measures_the_npz_instead_of_the_model(tmp_path):
    arrays = clouds()
    path = tmp_path / "emb.npz"
    np.savez(path, **arrays)
    out = tmp_path / "01.ipynb"
    with kernel_env({"TPCCMA_THREADS": "1"}):
        run_notebook(NAME, out, {"embeddings_file": str(path), "smoke": True, "seed": 0})
    nb = nbformat.read(out, as_version=4)
    printed = "\n".join(
        o.text for c in nb.cells if c.cell_type == "code" for o in c.outputs if "text" in o
    )
    assert "Traceback" not in printed

    image, text = unit(arrays["image"]), unit(arrays["text"])
    gap = centroid_gap(image, text)
    assert gap > 0.2  # the offset is there to be found

    # the data: the file's own counts, no model, no example images
    assert "data: emb.npz (your embeddings)" in printed
    assert f"all rows: {N} images, {N} captions, dimension {D}, {C} classes with images" in printed
    assert "no model is trained or loaded" in printed
    assert "example images and captions skipped" in printed
    assert "captioned-shapes" not in printed  # nothing of the embedded default is shown

    # Section 3: the decomposition of all rows; the centroid gap is numpy's
    assert f"emb.npz, all rows ({N} images, {N} captions)" in printed
    assert re.search(rf"^\s*centroid_gap\s+{re.escape(fmt(gap))}\s", printed, re.MULTILINE), gap
    assert "W2^2 identity holds (relative error < 1e-6): True" in printed
    assert "paired split holds (relative error < 1e-6): True" in printed

    # Section 4: fitted on a seeded half, scored on the other half (tpccma analyze's split)
    fit, held = split_images(N, 0.5, seed=0)
    assert f"the images (seed 0): {len(fit)} images, {len(fit)} captions; scored on the " in printed
    assert "(seed 0), applied to the other half; stage = renormalized" in printed
    identity = centroid_gap(image[held], text[held])
    fit_img, fit_txt = image[fit].mean(0), text[fit].mean(0)
    centred = centroid_gap(unit(image[held] - fit_img), unit(text[held] - fit_txt))
    renormalized = printed.split("stage = renormalized")[1].split("stage = mapped")[0]
    assert re.search(rf"^\s*identity\s+{re.escape(fmt(identity))}\s", renormalized, re.MULTILINE)
    assert re.search(rf"^\s*mean_center\s+{re.escape(fmt(centred))}\s", renormalized, re.MULTILINE)
    assert centred < identity / 2
