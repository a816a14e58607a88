"""The README's full-reproduction block, run end to end on format-faithful stand-ins.

The block (real open_clip CLIP, COCO Karpathy, CIFAR-10, a GPU) is executed command by command
as written, except: ``bash scripts/setup.sh`` and ``tpccma prepare`` (they need the internet;
asserted present), the model (a random-init ``TinyCLIP-test`` passed as ``pretrained=<file>``),
the data root (the stand-ins of :mod:`tests.fullrepro_standins`), the device (``cpu``),
``torchrun`` (2 gloo ranks, ``--standalone``) and sizes (smoke-size parameters appended).
Every table the paper reports must then hold finite numbers.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tpccma_lib.notebook import repo_root

sys.path.insert(0, str(Path(__file__).parent))
from fullrepro_standins import StandIns, write_standins  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

HEADING = "## Full reproduction on a GPU machine (internet needed once)"
#: smoke sizes appended to `tpccma report $P` (each declared by some notebook). The caption
#: decoder is DeCap's size on COCO (~3 s a step on one CPU thread): 2 steps run its code path.
REPORT_SIZES = (
    " --param n_similarity_pairs=200 --param toy_points=40 --param toy_steps=10"
    " --param map_steps=5 --param pairs_per_batch=32 --param steps=6 --param batch_size=16"
    " --param eval_every=3 --param decoder_steps=2 --param n_samples=2 --param posthoc_methods=shift"
    """ --param 'alphas="0,0.5"' --param jobs=1 --param n_points=30 --param cluster_images=50"""
    """ --param 'run_parameters={"ablation": False, "steps": 6, "batch_size": 16, "eval_every": 3,"""
    """ "decoder_steps": 2, "posthoc_methods": "shift"}'"""
)
#: smoke sizes of `tpccma sweep` (notebooks 03 + 04): notebook 05's run parameters above, so
#: the README's sweep resumes the two runs the report made and runs one more alpha
SWEEP_ALPHAS = "0,0.5,1.0"
SWEEP_SIZES = (
    " --param steps=6 --param batch_size=16 --param eval_every=3 --param decoder_steps=2"
    " --param posthoc_methods=shift"
)
#: and of `torchrun ... train`
TRAIN_SIZES = " --steps 6 --batch-size 16 --eval-every 3"


def readme_block() -> list[str]:
    """The commands of the README's full-reproduction ```bash block (continuations joined)."""
    text = (repo_root() / "README.md").read_text(encoding="utf-8")
    section = text[text.index(HEADING) :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"no ```bash block under {HEADING!r}"
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip()]


def split_block(commands: list[str]) -> tuple[list[str], str, list[str]]:
    """(the ``tpccma prepare`` lines, the ``P=`` line, the commands run after it).

    ``bash scripts/setup.sh`` (first) and every prepare line (they need the internet) are not
    run; they must be there.
    """
    assert commands[0] == "bash scripts/setup.sh"
    prepares = [c for c in commands[1:] if c.startswith(".venv/bin/tpccma prepare ")]
    rest = [c for c in commands[1:] if c not in prepares]
    assert prepares and prepares[0].startswith(".venv/bin/tpccma prepare coco cifar10")
    assert any(c.startswith(".venv/bin/tpccma prepare clip ViT-B-32 openai") for c in prepares)
    assert commands[1 : 1 + len(prepares)] == prepares  # fetched before anything runs
    assert rest[0].startswith("P=") and 'name="ViT-B-32"' in rest[0]
    return prepares, rest[0], rest[1:]


def adapt(command: str, s: StandIns) -> str:
    """The README command with model, data root, device, ranks and sizes of the dry run."""
    replace = [
        ('name="ViT-B-32"', f'name="{s.model_name}"'),
        ('pretrained="openai"', f'pretrained="{s.checkpoint}"'),
        ('device="cuda"', 'device="cpu"'),
        ("--name ViT-B-32", f"--name {s.model_name}"),
        ("--pretrained openai", f"--pretrained {s.checkpoint}"),
        ("--device cuda", "--device cpu"),
        ("--nproc_per_node 4", "--nproc_per_node 2 --standalone"),
    ]
    for old, new in replace:
        command = command.replace(old, new)
    if command.startswith("P="):
        assert command.endswith("'")
        command = command[:-1] + f' --param root="{s.data_root}"' + "'"
    elif " report $P" in command:
        command = command.split("#")[0].rstrip() + REPORT_SIZES
    elif " sweep " in command:
        command = command.split("#")[0].replace(
            " sweep ", f" sweep --alphas {SWEEP_ALPHAS} --seeds 0 "
        )
        command = command.rstrip() + SWEEP_SIZES
    elif "torchrun" in command:
        command = command.split("#")[0].rstrip() + f" --root {s.data_root}" + TRAIN_SIZES
    return command


@pytest.fixture(scope="session")
def standins(tmp_path_factory: pytest.TempPathFactory) -> StandIns:
    """COCO Karpathy, CIFAR-10 and a tiny open_clip checkpoint, written once per session."""
    return write_standins(tmp_path_factory.mktemp("fullrepro-standins"))


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _stream_text(notebook: Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "\n".join(
        "".join(out.get("text", ""))
        for cell in cells
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream"
    )


def test_readme_full_reproduction_block_runs_on_standins(standins, tmp_path):
    _, p_line, commands = split_block(readme_block())
    assert any("torchrun" in c for c in commands)
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(repo_root() / ".venv")  # the block calls .venv/bin/...
    runs = tmp_path / "runs"
    env = {
        **os.environ,
        "TPCCMA_RUNS": str(runs),
        "TPCCMA_DATA": str(standins.data_root),
        "TPCCMA_CACHE": str(tmp_path / "cache"),
        "TPCCMA_REPORTS": str(tmp_path / "reports"),
        "TPCCMA_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    prelude = adapt(p_line, standins)
    timings = {}
    for command in commands:
        script = f"{prelude}\n{adapt(command, standins)}\n"
        started = time.perf_counter()
        done = subprocess.run(
            ["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        timings[command.split()[1] if "torchrun" not in command else "torchrun"] = (
            time.perf_counter() - started
        )
        assert done.returncode == 0, (
            f"{adapt(command, standins)}\nexit {done.returncode}\n{done.stdout[-4000:]}\n"
            f"{done.stderr[-6000:]}"
        )
    print("dry-run timings (s):", {k: round(v) for k, v in timings.items()})

    # torchrun wrote the run notebooks 03/04 read: keyed by data set and model
    finals = sorted(runs.glob("finetune/coco-TinyCLIP-test-*/alpha0.5-seed0/final.pt"))
    assert len(finals) == 1, sorted(str(p) for p in runs.rglob("final.pt"))
    assert not (runs / "finetune" / "alpha0.5-seed0").exists()  # the default's folder untouched

    # notebook 04's rows: every task on the data set that serves it, finite
    (csv,) = runs.glob("eval/coco-TinyCLIP-test-*/alpha0.5-seed0.csv")
    rows = pd.read_csv(csv)
    wanted = {
        ("zero_shot", "accuracy"): "cifar10",
        ("clustering", "ari"): "cifar10",
        ("captioning", "CIDEr"): "coco",
        **{("retrieval", f"{d}_R@{k}"): "coco" for d in ("i2t", "t2i") for k in (1, 5, 10)},
        **{("gap", m): "coco" for m in ("raw_gap", "centroid_gap", "distribution_gap")},
    }  # fmt: skip
    for role in ("base", "finetuned"):
        mine = rows[(rows.role == role) & (rows.posthoc == "identity")]
        for (task, metric), dataset in wanted.items():
            hit = mine[(mine.task == task) & (mine.metric == metric)]
            assert len(hit) == 1, (role, task, metric)
            assert hit.dataset.iloc[0] == dataset, (role, task, metric, hit.dataset.iloc[0])
            assert _finite(float(hit.value.iloc[0])), (role, task, metric)
    clustering = rows[(rows.task == "clustering") & (rows.metric == "ari")].iloc[0]
    assert clustering.n_texts == 10 * 18  # the class prompts are the text side

    # the executed notebooks: all six, gap decomposition and notebook 05's tables printed
    executed = sorted((work / "runs" / "notebooks").glob("0*.ipynb"))
    assert [p.stem[:2] for p in executed] == ["01", "02", "03", "04", "05", "06"]
    text01 = _stream_text(executed[0])
    assert "W2^2 identity holds (relative error < 1e-6): True" in text01
    text05 = _stream_text(executed[4])
    assert "Trade-off against the original model, means over seeds" in text05
    assert "R² of task metric (rows) on gap metric (columns)" in text05
    assert "Paper (COCO / CIFAR-10, CLIP ViT-B/32) vs this project" in text05

    # the trade-off (Pareto) and R² tables of notebook 05, recomputed from its sweep folder
    from tpccma_lib.app import sweep
    from tpccma_lib.evaluation import tradeoff

    (sweep_dir,) = runs.glob("sweep/coco-TinyCLIP-test-*")
    points = tradeoff.sweep_points(sweep.collect(sweep_dir))
    summary = tradeoff.tradeoff_summary(tradeoff.tradeoff_table(points))
    fine = summary[summary.kind == "fine-tuned"]
    assert len(fine) == 3  # the report's 0 and 0.5, the README sweep's 1.0
    for column in ("raw_gap", "zero_shot_accuracy", "clustering_ari", "cider", "i2t_R@1"):
        assert summary[column].map(_finite).all(), column
    assert fine.gap_reduction_pct.map(_finite).all()
    assert fine.accuracy_drop_pct.map(_finite).all()
    r2 = tradeoff.r2_analysis(points)
    gap_on = r2[r2.task_metric.isin(["zero_shot_accuracy", "clustering_ari", "i2t_R@1"])]
    assert gap_on.r2.map(_finite).any() and r2.slope.map(_finite).all()

    # the README's sweep went to notebook 05's keyed folder (never the embedded default's
    # runs/sweep): it resumed the report's two runs and ran the new alpha
    status = pd.read_csv(sweep_dir / "summary.csv").set_index("alpha_target").status.to_dict()
    assert status == {0.0: "skipped", 0.5: "skipped", 1.0: "done"}, status
    assert not (work / "runs" / "sweep").exists() and not (runs / "sweep" / "summary.csv").exists()
