"""The alpha sweep: notebooks 03 (fine-tune) and 04 (evaluate) per (alpha_target, seed).

>>> alphas, seeds = parse_grid("0,0.05,0.5", "0,1")
>>> summary = run_sweep(alphas, seeds, out_dir="runs/sweep", jobs=2)   # one row per run
>>> rows = collect("runs/sweep")                                        # every result row

Layout of ``out_dir`` (one folder per run, named like notebook 03's default run folder)::

    out_dir/alpha0.05-seed1/03_curriculum_training.ipynb   executed notebook (kept, also on failure)
    out_dir/alpha0.05-seed1/finetune/final.pt               the fine-tuned checkpoint
    out_dir/alpha0.05-seed1/04_evaluation.ipynb             executed notebook
    out_dir/alpha0.05-seed1/results.csv                     notebook 04's rows
    out_dir/alpha0.05-seed1/done.json                       marker: written last, atomically
    out_dir/summary.csv                                     one row per run (atomic write)

A run whose ``done.json`` exists (with the same parameters) is skipped on a rerun; a failed run
is recorded in the summary (status, error, executed notebook) and does not stop the others.
A run folder is locked while a run works in it (``.tpccma.lock``): a second sweep into the same
folder reports that run as failed (in use by process N) instead of running it twice. Ctrl-C
stops the sweep within seconds (:class:`SweepInterrupted`); finished runs stay, cut-off runs
are redone by the next sweep.
Runs of one seed share a base model (pretrained on first use), so the first run of each seed
finishes before the other runs of that seed start; everything else runs ``jobs`` at a time.

Evaluating one run is :mod:`tpccma_lib.evaluation.roles` (notebook 04); analysing the sweep
is :mod:`tpccma_lib.evaluation.tradeoff` (notebook 05), fed by :func:`collect`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tpccma_lib.app.notebooks import ARITHMETIC_ENV, kernel_env, unless_set
from tpccma_lib.atomic import atomic_write_text, remove_stale_temp_files
from tpccma_lib.evaluation.model_report import METRIC_COLUMNS, headline
from tpccma_lib.locks import RunLockedError, run_lock

__all__ = [
    "SUMMARY_COLUMNS",
    "HEADLINE_COLUMNS",
    "METRIC_COLUMNS",
    "SWEEP_DEFAULTS_03",
    "SWEEP_DEFAULTS_04",
    "SweepError",
    "SweepInterrupted",
    "RunPaths",
    "NotebookRunner",
    "parse_grid",
    "run_name",
    "run_paths",
    "run_parameters",
    "run_one",
    "run_sweep",
    "collect",
    "summarize",
]

#: Headline metrics of the fine-tuned model, one column each in the summary.
HEADLINE_COLUMNS = (
    "raw_gap",
    "centroid_gap",
    "distribution_gap",
    "zero_shot_accuracy",
    "clustering_ari",
    "cider",
    "i2t_R@1",
    "t2i_R@1",
)


#: Columns of ``summary.csv``.
SUMMARY_COLUMNS = (
    "alpha_target",
    "seed",
    "status",
    *HEADLINE_COLUMNS,
    "wall_s",
    "error",
    "notebook",
    "run_dir",
)

#: Environment of every notebook kernel when runs go in parallel (one thread each).
_SINGLE_THREAD_ENV = {
    "TPCCMA_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

#: Parameters of notebook 03 in a sweep unless ``parameters`` say otherwise: no ablation twin
#: and no control run (each would add a training per run; the sweep's alpha = 0 runs are the
#: control, and notebook 03 run alone still shows both).
SWEEP_DEFAULTS_03: dict[str, Any] = {"ablation": False, "control": False}
#: ... and of notebook 04: no bootstrap intervals and floors of every gap (about 30 s a run on
#: 2 cores; the sweep's spread over seeds is its uncertainty, notebook 04 run alone prints them).
SWEEP_DEFAULTS_04: dict[str, Any] = {"uncertainty": False}

NotebookRunner = Callable[..., Any]
"""``runner(name, out_path, parameters)`` executes notebook ``name`` into ``out_path``."""


class SweepError(ValueError):
    """A bad sweep grid or folder; the message says what was wrong and how to fix it."""


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the sweep; ``summary`` holds every run's row (also in summary.csv).

    Finished runs keep their results; runs that were cut off are ``"interrupted"`` and runs
    that never started ``"cancelled"``; both are redone by the next sweep.
    """

    def __init__(self, summary: pd.DataFrame) -> None:
        super().__init__("the sweep was interrupted")
        self.summary = summary


_INTERRUPTED = "interrupted (Ctrl-C); the next sweep redoes this run"


# --------------------------------------------------------------------------- the grid
def _items(text: str, what: str) -> list[str]:
    if not isinstance(text, str):
        text = ",".join(str(v) for v in text)
    items = [item.strip() for item in text.split(",")]
    if not text.strip():
        raise SweepError(f"{what} is empty; give a comma-separated list, e.g. '0,0.05,0.5'.")
    if any(item == "" for item in items):
        raise SweepError(f"{what} {text!r} has an empty entry; remove the extra comma.")
    return items


def _duplicates(values: Sequence[Any], items: Sequence[str], what: str) -> None:
    seen: dict[Any, str] = {}
    for value, item in zip(values, items, strict=True):
        if value in seen:
            raise SweepError(
                f"{what} lists {value} twice ({seen[value]!r} and {item!r}); give each value once."
            )
        seen[value] = item


def default_out_dir(parameters: dict[str, Any] | None = None) -> Path:
    """Where ``tpccma sweep`` writes without ``--out``, the folder notebook 05 sweeps into with
    the same parameters (so each resumes the other's finished runs): ``$TPCCMA_RUNS/sweep``
    (default ``runs/sweep``) for the embedded default, the keyed
    ``$TPCCMA_RUNS/sweep/<dataset>-<model>-<key>`` for another data set or model (so the
    README's full reproduction never redoes the embedded sweep's runs), and ``sweep-smoke``
    instead of ``sweep`` when the parameters set ``smoke``."""
    from tpccma_lib.data.config import DataConfig
    from tpccma_lib.experiment import Experiment, config_from_params
    from tpccma_lib.models import ModelConfig

    params = dict(parameters or {})
    exp = Experiment(
        config_from_params(DataConfig, params), config_from_params(ModelConfig, params)
    )
    return exp.run_dir("sweep-smoke" if params.get("smoke") else "sweep", "")


def parse_grid(alphas: str, seeds: str) -> tuple[list[float], list[int]]:
    """Parse the sweep grid from comma-separated text.

    Args:
        alphas: alpha_target values, e.g. ``"0,0.05,0.5"``: numbers in [0, 1], each once.
        seeds: seeds, e.g. ``"0,1"``: non-negative integers, each once.

    Returns:
        (alphas as floats, seeds as ints), in the order given.

    Raises:
        SweepError: an empty list or entry, a value that is not a number (an integer for
            seeds), an alpha outside [0, 1], a negative seed, or a duplicate.
    """
    alpha_items = _items(alphas, "alphas")
    alpha_values = []
    for item in alpha_items:
        try:
            value = float(item)
        except ValueError:
            raise SweepError(f"alpha {item!r} is not a number; use e.g. 0.05.") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise SweepError(f"alpha {item!r} is outside [0, 1]; alpha_target weights L_CMA.")
        alpha_values.append(value + 0.0)  # -0.0 -> 0.0
    _duplicates(alpha_values, alpha_items, "alphas")
    seed_items = _items(seeds, "seeds")
    seed_values = []
    for item in seed_items:
        try:
            value = int(item)
        except ValueError:
            raise SweepError(f"seed {item!r} is not an integer; use e.g. 0,1,2.") from None
        if value < 0:
            raise SweepError(f"seed {item!r} is negative; seeds are integers >= 0.")
        seed_values.append(value)
    _duplicates(seed_values, seed_items, "seeds")
    return alpha_values, seed_values


# --------------------------------------------------------------------------- one run
def run_name(alpha: float, seed: int) -> str:
    """Folder name of a run, as notebook 03 names its default run: ``alpha0.05-seed1``."""
    return f"alpha{float(alpha)}-seed{int(seed)}"


@dataclass(frozen=True)
class RunPaths:
    """Where one run of the sweep keeps its files."""

    run_dir: Path  # out_dir / run_name(alpha, seed)
    finetune_dir: Path  # notebook 03's out_dir (checkpoints, metrics.jsonl)
    checkpoint: Path  # the fine-tuned model notebook 04 evaluates
    results_csv: Path  # notebook 04's rows
    notebook_03: Path  # executed notebook 03
    notebook_04: Path  # executed notebook 04
    done: Path  # marker written after notebook 04 wrote its CSV


def run_paths(out_dir: str | os.PathLike[str], alpha: float, seed: int) -> RunPaths:
    """The :class:`RunPaths` of run (alpha, seed) under ``out_dir`` (made absolute)."""
    run_dir = Path(out_dir).resolve() / run_name(alpha, seed)
    return RunPaths(
        run_dir=run_dir,
        finetune_dir=run_dir / "finetune",
        checkpoint=run_dir / "finetune" / "final.pt",
        results_csv=run_dir / "results.csv",
        notebook_03=run_dir / "03_curriculum_training.ipynb",
        notebook_04=run_dir / "04_evaluation.ipynb",
        done=run_dir / "done.json",
    )


def run_parameters(
    alpha: float,
    seed: int,
    paths: RunPaths,
    parameters: dict[str, Any] | None = None,
    with_posthoc: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Papermill parameters of notebooks 03 and 04 for one run.

    ``parameters`` go to both notebooks (a notebook ignores names it does not define), over
    :data:`SWEEP_DEFAULTS_03` for notebook 03 and :data:`SWEEP_DEFAULTS_04` for notebook 04;
    the run's own alpha, seed and paths override them. ``with_posthoc`` makes notebook 04 also
    evaluate the base model with every post-hoc method, or with the ``posthoc_methods`` given
    (the sweep asks it of the smallest alpha's runs only: the base model is the same for every
    alpha of a seed).
    """
    common = {**(parameters or {}), "alpha_target": float(alpha), "seed": int(seed)}
    params_03 = {**SWEEP_DEFAULTS_03, **common, "out_dir": str(paths.finetune_dir)}
    params_04 = {
        **SWEEP_DEFAULTS_04,
        **common,
        "checkpoint": str(paths.checkpoint),
        "results_csv": str(paths.results_csv),
        "train_if_missing": False,
        "include_base": bool(with_posthoc),
        "posthoc_methods": common.get("posthoc_methods", "all") if with_posthoc else "none",
    }
    return params_03, params_04


#: The notebooks of one run, by the key of their parameters in ``done.json``.
RUN_NOTEBOOKS = {"parameters_03": "03_curriculum_training", "parameters_04": "04_evaluation"}


def effective_parameters(notebook: str, *parameter_sets: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of ``parameter_sets`` without the entries equal to the notebook's own defaults and
    without those it does not declare (papermill passes them, the notebook never reads them):
    the settings that make a run differ from the notebook as written (``amp="none"`` given or
    not is the same run). With ``smoke`` set, the data sizes are dropped too: the notebook
    replaces them by :data:`~tpccma_lib.experiment.SMOKE_SIZES` whatever was passed (notebook 05
    passes its own, shrunk ones; ``tpccma sweep --param smoke=True`` none). The notebook is
    inspected once for all sets."""
    from tpccma_lib.app.notebooks import notebook_defaults, notebook_parameters
    from tpccma_lib.experiment import SMOKE_SIZES

    declared, defaults = notebook_parameters(notebook), notebook_defaults(notebook)
    missing = object()
    return [
        {
            k: v
            for k, v in params.items()
            if k in declared
            and defaults.get(k, missing) != v
            and not (params.get("smoke") and k in SMOKE_SIZES)
        }
        for params in parameter_sets
    ]


def same_run(done: dict[str, Any], record: dict[str, Any]) -> bool:
    """True when a finished run's ``done.json`` was made with the settings of ``record``
    (``{"parameters_03": ..., "parameters_04": ...}``), however they were spelled: notebook
    05 names every data and model setting, ``tpccma sweep`` only those given on its command
    line, and both resume the same runs."""
    for key, notebook in RUN_NOTEBOOKS.items():
        saved = done.get(key)
        if not isinstance(saved, dict):
            return False
        before, now = effective_parameters(notebook, saved, record[key])
        if before != now:
            return False
    return True


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`tpccma_lib.atomic.atomic_write_text`)."""
    atomic_write_text(path, text)


def _read_done(paths: RunPaths) -> dict[str, Any] | None:
    try:
        return json.loads(paths.done.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _error_text(exc: BaseException, limit: int = 500) -> str:
    """One line saying what failed: papermill's ``ename: evalue`` when it has them."""
    ename, evalue = getattr(exc, "ename", None), getattr(exc, "evalue", None)
    text = f"{ename}: {evalue}" if ename else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _relative(path: Path, paths: RunPaths) -> str:
    """``path`` relative to the sweep folder (``alpha0.5-seed0/04_evaluation.ipynb``)."""
    return str(path.relative_to(paths.run_dir.parent))


def _headline_of(results_csv: Path) -> dict[str, float]:
    """Headline numbers of the fine-tuned model's un-fixed rows in a notebook-04 CSV."""
    frame = pd.read_csv(results_csv)
    if "role" in frame.columns:
        frame = frame[frame["role"] == "finetuned"]
    if "posthoc" in frame.columns:
        frame = frame[frame["posthoc"].fillna("identity") == "identity"]
    numbers = headline(frame)
    return {column: numbers.get(column, float("nan")) for column in HEADLINE_COLUMNS}


def run_one(
    alpha: float,
    seed: int,
    out_dir: str | os.PathLike[str],
    parameters: dict[str, Any] | None = None,
    with_posthoc: bool = False,
    runner: NotebookRunner | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """Run notebooks 03 and 04 for (alpha, seed) unless done before -> its summary row.

    Never raises for a failing notebook: the row's ``status`` is ``"failed"`` with the error
    and the executed notebook that holds the traceback. ``status`` is ``"done"`` for a run
    made now and ``"skipped"`` for one finished earlier with the same parameters. The run
    folder is locked (:func:`tpccma_lib.locks.run_lock`) while the run works in it: a run
    another process is working on is ``"failed"`` with the holder's pid, never run twice.
    Once ``stop`` is set (Ctrl-C), no further notebook starts and a notebook that fails is
    reported ``"interrupted"``; such a run has no ``done.json``, so a rerun redoes it.
    """
    if runner is None:
        from tpccma_lib.app.notebooks import run_notebook as runner
    paths = run_paths(out_dir, alpha, seed)
    row: dict[str, Any] = {
        "alpha_target": float(alpha),
        "seed": int(seed),
        "run_dir": paths.run_dir.name,
        "error": "",
    }
    try:
        with run_lock(paths.run_dir, "sweep run"):
            remove_stale_temp_files(paths.run_dir)
            return _run_locked(paths, row, parameters, with_posthoc, runner, stop)
    except RunLockedError as exc:
        return {**row, "status": "failed", "wall_s": 0.0, "error": _error_text(exc)}


class _Stopped(Exception):
    """The sweep was interrupted before this notebook started."""


def _run_locked(
    paths: RunPaths,
    row: dict[str, Any],
    parameters: dict[str, Any] | None,
    with_posthoc: bool,
    runner: NotebookRunner,
    stop: threading.Event | None,
) -> dict[str, Any]:
    """The body of :func:`run_one`, with the run folder locked."""
    alpha, seed = row["alpha_target"], row["seed"]
    params_03, params_04 = run_parameters(alpha, seed, paths, parameters, with_posthoc)
    record = {"parameters_03": params_03, "parameters_04": params_04}
    done = _read_done(paths)
    if done is not None and same_run(done, record):
        try:
            numbers = _headline_of(paths.results_csv)
        except (OSError, ValueError, pd.errors.ParserError):
            numbers = None  # the CSV went missing or bad: redo the run
        if numbers is not None:
            return {
                **row,
                "status": "skipped",
                "wall_s": done.get("wall_s", float("nan")),
                "notebook": _relative(paths.notebook_04, paths),
                **numbers,
            }
    paths.done.unlink(missing_ok=True)  # stale or partial: redo the run
    start = time.perf_counter()
    notebook = paths.notebook_03
    try:
        paths.run_dir.mkdir(parents=True, exist_ok=True)
        if stop is not None and stop.is_set():
            raise _Stopped
        runner("03_curriculum_training", paths.notebook_03, params_03)
        notebook = paths.notebook_04
        if stop is not None and stop.is_set():
            raise _Stopped
        runner("04_evaluation", paths.notebook_04, params_04)
        if not paths.results_csv.exists():
            raise SweepError(
                f"notebook 04 finished but wrote no {paths.results_csv.name}; check its "
                "results_csv parameter."
            )
        numbers = _headline_of(paths.results_csv)
    except Exception as exc:  # noqa: BLE001 - a failed run is recorded, the others go on
        interrupted = stop is not None and stop.is_set()
        return {
            **row,
            "status": "interrupted" if interrupted else "failed",
            "wall_s": time.perf_counter() - start,
            "error": _INTERRUPTED if interrupted else _error_text(exc),
            "notebook": _relative(notebook, paths),
        }
    wall_s = time.perf_counter() - start
    _write_atomic(paths.done, json.dumps({**record, "wall_s": wall_s}, indent=1, sort_keys=True))
    return {
        **row,
        "status": "done",
        "wall_s": wall_s,
        "notebook": _relative(notebook, paths),
        **numbers,
    }


# --------------------------------------------------------------------------- the sweep
def _check_parameter_names(parameters: dict[str, Any]) -> None:
    """Refuse a parameter that neither notebook 03 nor 04 declares (a typo would be ignored),
    and one that the grid sets for every run (``alpha_target``, ``seed``)."""
    from tpccma_lib.app.notebooks import check_parameter_names

    grid = sorted({"alpha_target", "seed"} & set(parameters))
    if grid:
        raise SweepError(
            f"parameter(s) {grid} are set by the sweep's grid for every run; "
            "give them with --alphas / --seeds instead of --param."
        )
    try:
        check_parameter_names(parameters, ["03_curriculum_training", "04_evaluation"])
    except ValueError as exc:
        raise SweepError(str(exc)) from exc


def _check_parameter_values(parameters: dict[str, Any]) -> None:
    """Refuse an out-of-range training or data setting before any kernel starts.

    The settings classes that own the values (``TrainConfig``, ``DataConfig``) check them,
    the one validation layer the notebooks use too: training values one at a time (the
    notebooks' other training defaults are not known here), data values together.
    """
    from dataclasses import fields

    from tpccma_lib.data.config import DataConfig
    from tpccma_lib.training.loop import TrainConfig

    train_names = {f.name for f in fields(TrainConfig)}
    data_names = {f.name for f in fields(DataConfig)}
    checks = [({k: v}, k) for k, v in parameters.items() if k in train_names]
    data = {k: v for k, v in parameters.items() if k in data_names}
    for given, key in checks:
        try:
            TrainConfig(**given)
        except (ValueError, TypeError) as exc:
            raise SweepError(f"parameter {key}={given[key]!r}: {exc}") from None
    try:
        DataConfig(**data)
    except (ValueError, TypeError) as exc:
        raise SweepError(f"parameters {data}: {exc}") from None


def summarize(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Summary rows -> DataFrame with :data:`SUMMARY_COLUMNS`, sorted by (alpha, seed)."""
    frame = pd.DataFrame(list(rows))
    for column in SUMMARY_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype=object if column in ("status", "error") else float)
    frame = frame[list(SUMMARY_COLUMNS)]
    return frame.sort_values(["alpha_target", "seed"], kind="stable").reset_index(drop=True)


def run_sweep(
    alphas: Sequence[float],
    seeds: Sequence[int],
    out_dir: str | os.PathLike[str] = "runs/sweep",
    jobs: int = 1,
    parameters: dict[str, Any] | None = None,
    runner: NotebookRunner | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run notebooks 03 + 04 for every (alpha, seed); write and return the summary.

    Args:
        alphas: alpha_target values (see :func:`parse_grid`).
        seeds: seeds; each is the notebooks' ``seed`` parameter.
        out_dir: sweep folder (see the module docstring for its layout).
        jobs: runs at a time; with more than one, every kernel gets one thread
            (``TPCCMA_THREADS=1`` and the BLAS thread variables).
        parameters: extra papermill parameters for every run (e.g. ``{"steps": 200}``).
        runner: executes one notebook (default
            :func:`tpccma_lib.app.notebooks.run_notebook`); tests pass a fake.
        progress: print one line per finished run.

    Returns:
        the summary (:data:`SUMMARY_COLUMNS`, one row per run), also written to
        ``out_dir/summary.csv``. ``status`` is ``done``, ``skipped`` or ``failed`` (see
        :func:`run_one`); callers should treat any ``failed`` row as a failed sweep.

    Raises:
        SweepInterrupted: Ctrl-C. Queued runs are cancelled, running notebook kernels are
            interrupted (then killed), finished runs keep their results; the summary (also
            written to ``summary.csv``) marks the cut-off runs ``interrupted`` and the
            never-started ones ``cancelled``, and the next sweep redoes both.
    """
    if jobs < 1:
        raise SweepError(f"jobs must be >= 1, got {jobs}.")
    if runner is None:
        _check_parameter_names(parameters or {})
    _check_parameter_values(parameters or {})
    if not alphas or not seeds:
        raise SweepError("the grid is empty: give at least one alpha and one seed.")
    ordered = sorted({float(a) for a in alphas})
    smallest = ordered[0]
    # Per seed: the first run (smallest alpha) pretrains the seed's base model if needed;
    # the seed's other runs wait for it.
    chains = {int(seed): ordered for seed in seeds}
    out_dir = Path(out_dir).resolve()  # once, before any run starts
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(out_dir)
    rows: dict[tuple[float, int], dict[str, Any]] = {}
    futures: dict[tuple[float, int], Future] = {}
    env = _SINGLE_THREAD_ENV if jobs > 1 else {}
    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=jobs)

    def submit(alpha: float, seed: int) -> None:
        futures[(alpha, seed)] = pool.submit(
            run_one, alpha, seed, out_dir, parameters, alpha == smallest, runner, stop
        )

    def record(alpha: float, seed: int) -> None:
        try:
            row = futures[(alpha, seed)].result()
        except Exception as exc:  # noqa: BLE001 - e.g. out_dir not writable
            row = {"alpha_target": alpha, "seed": seed, "status": "failed"}
            row["error"] = _error_text(exc)
        rows[(alpha, seed)] = row
        if progress:
            note = f" ({row['error']})" if row["status"] in ("failed", "interrupted") else ""
            print(f"[sweep] {run_name(alpha, seed)}: {row['status']}{note}", flush=True)

    interrupted = False
    with kernel_env({**unless_set(ARITHMETIC_ENV), **env}):
        try:
            for seed, chain in chains.items():
                submit(chain[0], seed)
            while len(rows) < len(futures):
                running = [f for key, f in futures.items() if key not in rows]
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for key in [k for k, f in futures.items() if f in finished]:
                    record(*key)
                    alpha, seed = key
                    if alpha == chains[seed][0]:
                        for later in chains[seed][1:]:
                            submit(later, seed)
        except KeyboardInterrupt:
            interrupted = True
            _stop_runs(stop, pool, futures, rows, progress)
        finally:
            pool.shutdown(wait=not interrupted)
    for seed, chain in chains.items():  # runs that never started (Ctrl-C)
        for alpha in chain:
            cancelled = {"alpha_target": alpha, "seed": seed, "status": "cancelled"}
            cancelled.update(error=_CANCELLED, run_dir=run_name(alpha, seed))
            rows.setdefault((alpha, seed), cancelled)
    summary = summarize(list(rows.values()))
    _write_atomic(
        out_dir / "summary.csv", _merged_with_earlier(summary, out_dir).to_csv(index=False)
    )
    if interrupted:
        raise SweepInterrupted(summary)
    return summary


#: Seconds to wait for the running runs to end after Ctrl-C stopped their kernels.
STOP_TIMEOUT_S = 30.0
_CANCELLED = "cancelled (Ctrl-C) before it started; the next sweep runs it"


def _stop_runs(
    stop: threading.Event,
    pool: ThreadPoolExecutor,
    futures: dict[tuple[float, int], Future],
    rows: dict[tuple[float, int], dict[str, Any]],
    progress: bool,
) -> None:
    """After Ctrl-C: cancel queued runs, stop the running kernels, collect what finished."""
    from tpccma_lib.app.kernels import stop_kernels

    stop.set()
    pool.shutdown(wait=False, cancel_futures=True)
    if progress:
        print("[sweep] interrupted: cancelling queued runs, stopping running notebooks", flush=True)
    stop_kernels()
    open_runs = {key: f for key, f in futures.items() if key not in rows}
    # (a cancelled future never counts as done for wait())
    wait([f for f in open_runs.values() if not f.cancelled()], timeout=STOP_TIMEOUT_S)
    for (alpha, seed), future in open_runs.items():
        if future.cancelled():
            continue  # reported "cancelled"
        if future.done():
            try:
                rows[(alpha, seed)] = future.result()
                continue
            except Exception:  # noqa: BLE001, S112 - reported as interrupted below
                pass
        rows[(alpha, seed)] = {
            "alpha_target": alpha,
            "seed": seed,
            "status": "interrupted",
            "error": _INTERRUPTED,
            "run_dir": run_name(alpha, seed),
        }


def _merged_with_earlier(summary: pd.DataFrame, out_dir: Path) -> pd.DataFrame:
    """``summary`` plus the rows of an earlier ``summary.csv`` for other (alpha, seed) whose
    runs are still finished (``done.json``), so a smaller grid run later (e.g. notebook 05's
    stored one) does not drop the full sweep's rows from the file the README reads."""
    path = out_dir / "summary.csv"
    try:
        earlier = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError):
        return summary
    if not {"alpha_target", "seed", "status"} <= set(earlier.columns):
        return summary
    now = set(zip(summary.alpha_target.astype(float), summary.seed.astype(int), strict=True))
    keep = [
        (float(a), int(s)) not in now
        and status in ("done", "skipped")
        and run_paths(out_dir, a, s).done.exists()
        for a, s, status in zip(earlier.alpha_target, earlier.seed, earlier.status, strict=True)
    ]
    if not any(keep):
        return summary
    return summarize([*summary.to_dict("records"), *earlier[keep].to_dict("records")])


def collect(out_dir: str | os.PathLike[str], runs: Iterable[str] | None = None) -> pd.DataFrame:
    """Every result row of the finished runs under ``out_dir`` (runs without ``done.json``
    are left out), with ``alpha_target`` and ``train_seed`` columns naming the run.

    ``runs``: only these run folders (e.g. a sweep's ``run_dir`` column), so that an analysis
    of one grid does not pick up other grids' runs in the same folder; default all.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise SweepError(f"no sweep folder {out_dir}; run the sweep first (tpccma sweep).")
    wanted = None if runs is None else {str(name) for name in runs}
    frames = []
    for done in sorted(out_dir.glob("*/done.json")):
        if wanted is not None and done.parent.name not in wanted:
            continue
        record = json.loads(done.read_text(encoding="utf-8"))
        params = record.get("parameters_04", {})
        csv = done.parent / "results.csv"
        if not csv.exists():
            continue
        frame = pd.read_csv(csv)
        frame["alpha_target"] = params.get("alpha_target", float("nan"))
        frame["train_seed"] = params.get("seed", -1)
        frame["run"] = done.parent.name
        frames.append(frame)
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
