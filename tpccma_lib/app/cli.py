"""The ``tpccma`` command: prepare / pretrain / train / evaluate / sweep / report / analyze.

Flags are generated from the settings dataclasses (``DataConfig``, ``ModelConfig``,
``TrainConfig``), so the CLI, the notebooks' papermill parameters and the library share one
set of names: ``--alpha-target 0.05`` sets ``TrainConfig.alpha_target``.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser"]


def _arg_type(tp: Any) -> Any:
    if isinstance(tp, str):
        tp = {"int": int, "float": float, "bool": bool, "str": str}.get(
            tp.split("|")[0].strip(), str
        )
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _arg_type(args[0])
    return tp


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, defaults: Any = None) -> None:
    """One ``--field-name`` flag per field of dataclass ``cls`` (default: the field's, or that
    of the instance ``defaults``, e.g. ``FINETUNE_CONFIG``).

    A name shared by several settings classes (``seed``, ``image_size``) is one flag that sets
    all of them.
    """
    taken = {a.dest for a in parser._actions}
    group = parser.add_argument_group(cls.__name__)
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in taken:
            continue
        tp = _arg_type(hints.get(f.name, str))
        if defaults is not None:
            default = getattr(defaults, f.name)
        else:
            default = f.default if f.default is not MISSING else None
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            default=argparse.SUPPRESS,
            type=_parse_bool if tp is bool else tp,
            help=f"(default: {default})",
        )


def dataclass_from_args(cls: type, args: argparse.Namespace, base: Any = None) -> Any:
    """Build ``cls`` from the flags given on the command line; the others keep their defaults
    (those of the instance ``base`` when given)."""
    from tpccma_lib.experiment import config_from_params

    return config_from_params(cls, vars(args), base)


def build_parser() -> argparse.ArgumentParser:
    from tpccma_lib.app.readme import DEFAULT_GRID
    from tpccma_lib.data.config import DataConfig
    from tpccma_lib.experiment import FINETUNE_CONFIG
    from tpccma_lib.models import ModelConfig
    from tpccma_lib.training.loop import TrainConfig

    p = argparse.ArgumentParser(prog="tpccma", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "prepare",
        help="download COCO captions / CIFAR-10 / CLIP weights (needs internet)",
        description="`tpccma prepare coco cifar10` fetches the data sets; `tpccma prepare clip "
        "ViT-B-32 openai` (clip NAME TAG) fetches open_clip weights into the Hugging Face "
        "cache, which later runs read offline.",
    )
    s.add_argument("names", nargs="+", metavar="WHAT", help="coco, cifar10, and/or clip NAME TAG")
    s.add_argument("--root", default=None, help="data folder (default $TPCCMA_DATA or ./data)")

    s = sub.add_parser(
        "pretrain", help="pretrain the embedded mini-CLIP's heads; print base numbers"
    )
    add_dataclass_args(s, DataConfig)
    add_dataclass_args(s, ModelConfig)
    s.add_argument("--runs", default=None, help="runs folder (default $TPCCMA_RUNS or ./runs)")

    s = sub.add_parser("train", help="TPC-CMA fine-tune of the base model")
    add_dataclass_args(s, DataConfig)
    add_dataclass_args(s, ModelConfig)
    add_dataclass_args(s, TrainConfig, defaults=FINETUNE_CONFIG)
    s.add_argument(
        "--out",
        default=None,
        help="run folder (checkpoint.pt, final.pt, metrics.jsonl); default: the folder notebooks "
        "03/04 use, <runs>/finetune[/<data+model key>]/alpha<alpha_target>-seed<seed>",
    )
    s.add_argument(
        "--no-resume", action="store_true", help="start over even if a checkpoint exists"
    )
    s.add_argument(
        "--keep-checkpoint",
        action="store_true",
        help="keep checkpoint.pt (optimizer state, ~3x the weights) after final.pt is written",
    )
    s.add_argument("--runs", default=None)

    s = sub.add_parser("evaluate", help="all tasks on the test split; rows to CSV")
    add_dataclass_args(s, DataConfig)
    add_dataclass_args(s, ModelConfig)
    s.add_argument("--checkpoint", default=None, help="fine-tuned checkpoint (default: base model)")
    s.add_argument("--posthoc", default="identity", help="post-hoc fix applied before evaluation")
    s.add_argument("--csv", default=None, help="write rows here")
    s.add_argument(
        "--captioning",
        type=_parse_bool,
        default=True,
        help="train the text-only caption decoder and score captions (slow part)",
    )
    s.add_argument(
        "--decoder-steps",
        type=int,
        default=None,
        help="caption decoder training steps (default: the data set's: shapes 400 steps of the "
        "small decoder; coco the DeCap-sized decoder for 10 epochs of the train captions)",
    )
    s.add_argument("--runs", default=None)

    s = sub.add_parser(
        "analyze",
        help="gap decomposition, post-hoc fixes and tasks of your own embeddings (.npz)",
        description="Analyse embeddings of any dual encoder saved as .npz (arrays image, text "
        "and optionally text_to_image, labels, class_names, class_text; see "
        "tpccma_lib.embeddings_io). Writes summary.csv and report.md into --out.",
    )
    s.add_argument("npz", help="the embeddings file")
    s.add_argument("--out", default="reports/analyze", help="folder for summary.csv, report.md")
    s.add_argument(
        "--fit-split-fraction",
        type=float,
        default=0.5,
        help="fraction of the images (with their captions) the post-hoc fixes are fitted on; "
        "they are applied to the rest",
    )
    s.add_argument("--seed", type=int, default=0, help="seeds the split, floor and bootstrap")

    s = sub.add_parser("sweep", help="papermill alpha sweep: notebooks 03 + 04 per (alpha, seed)")
    alphas, seeds = DEFAULT_GRID  # the grid README's results table describes
    s.add_argument("--alphas", default=",".join(f"{a:g}" for a in alphas))
    s.add_argument("--seeds", default=",".join(str(seed) for seed in seeds))
    s.add_argument("--jobs", type=int, default=1)
    s.add_argument(
        "--out",
        default=None,
        help="sweep folder (default: notebook 05's, under $TPCCMA_RUNS or ./runs: sweep/ for the "
        "embedded default, the keyed sweep/<dataset>-<model>-<key> for another data set or "
        "model; sweep-smoke/ instead of sweep/ with --param smoke=True)",
    )
    s.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra papermill parameter for every run, e.g. steps=200 (a Python literal)",
    )

    s = sub.add_parser("report", help="run every notebook (papermill) and write reports/*.html")
    s.add_argument("--out", default="runs/notebooks")
    s.add_argument("--reports", default="reports")
    s.add_argument("--only", default=None, help="comma-separated notebook names")
    s.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="papermill parameter, e.g. smoke=True or name='ViT-B-32' (a Python literal; "
        "bare words are strings). Every name must be declared by a notebook that runs.",
    )

    s = sub.add_parser(
        "readme",
        help="maintainers: regenerate README's measured sections from the full default sweep",
    )
    s.add_argument("--readme", default=None, help="README to rewrite (default: the repository's)")
    s.add_argument("--sweep", default="runs/sweep", help="folder of the default `tpccma sweep`")

    s = sub.add_parser("refresh-notebooks", help="re-execute notebooks in place (stored outputs)")
    s.add_argument("--only", default=None)
    return p


def parse_param_value(text: str) -> Any:
    """A ``--param`` value: a Python literal (``False``, ``None``, ``0.5``, ``'ViT-B-32'``,
    ``[1, 2]``), else JSON (``true``, ``null``), else the text itself as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _params(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"--param expects KEY=VALUE with KEY a parameter name, got {item!r}.")
        out[key] = parse_param_value(value)
    return out


def _experiment(args: argparse.Namespace) -> Any:
    from tpccma_lib.data.config import DataConfig
    from tpccma_lib.experiment import Experiment
    from tpccma_lib.models import ModelConfig

    data = dataclass_from_args(DataConfig, args)
    model = dataclass_from_args(ModelConfig, args)
    return Experiment(data, model, runs_dir=getattr(args, "runs", None))


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from tpccma_lib.evaluation.model_report import base_model_summary

    exp = _experiment(args)
    model = exp.base_model()
    print(base_model_summary(exp, model))
    print(f"base checkpoint: {exp.base_dir / 'final.pt'}")
    return 0


def _init_distributed() -> bool:
    """Join the process group when launched by ``torchrun`` (WORLD_SIZE > 1)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def _cmd_train(args: argparse.Namespace) -> int:
    from tpccma_lib.atomic import check_writable
    from tpccma_lib.experiment import FINETUNE_CONFIG
    from tpccma_lib.training.loop import TrainConfig

    exp = _experiment(args)
    cfg = dataclass_from_args(TrainConfig, args, base=FINETUNE_CONFIG)
    # default: the run folder notebooks 03/04 use for these settings
    out = args.out or exp.run_dir("finetune", f"alpha{cfg.alpha_target}-seed{cfg.seed}")
    check_writable(out, "--out")  # before any work, not at the first checkpoint
    distributed = _init_distributed()
    try:
        from tpccma_lib.training.runs import gap_monitor

        # the validation gap every eval_every steps, as notebook 03 logs it (its gap curves)
        result = exp.finetune(
            cfg,
            out,
            resume=not args.no_resume,
            eval_fn=gap_monitor(exp, "val"),
            keep_checkpoint=args.keep_checkpoint,
        )
    finally:
        if distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    if result.resumed_from_step == cfg.steps:
        print(f"already finished, not retrained: final checkpoint {result.final_checkpoint}")
        return 0
    print(
        f"trained {cfg.steps} steps (resumed at {result.resumed_from_step}) in "
        f"{result.wall_time_s:.1f} s; final checkpoint {result.final_checkpoint}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from tpccma_lib.atomic import atomic_write_text, check_writable
    from tpccma_lib.evaluation.model_report import EvalConfig, decoder_config_for, evaluate_model

    exp = _experiment(args)
    if args.csv:
        check_writable(args.csv, "--csv", folder=False)  # before the work, not after it
    model = exp.load(args.checkpoint) if args.checkpoint else exp.base_model()
    cfg = EvalConfig(
        captioning=args.captioning, decoder=decoder_config_for(exp.data, args.decoder_steps)
    )
    frame = evaluate_model(
        exp,
        model,
        checkpoint=args.checkpoint or str(exp.base_dir / "final.pt"),
        posthoc=args.posthoc,
        cfg=cfg,
    )
    print(frame.to_string(index=False))
    if args.csv:
        atomic_write_text(args.csv, frame.to_csv(index=False))
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    """Exit 0 when every run finished, 1 when any failed (listed), 130 on Ctrl-C."""
    from tpccma_lib.app.sweep import SweepInterrupted, default_out_dir, parse_grid, run_sweep
    from tpccma_lib.atomic import check_writable

    alphas, seeds = parse_grid(args.alphas, args.seeds)
    parameters = _params(args.param)
    out = args.out if args.out is not None else default_out_dir(parameters)
    check_writable(out, "--out")
    try:
        summary = run_sweep(alphas, seeds, out_dir=out, jobs=args.jobs, parameters=parameters)
        code = 0
    except SweepInterrupted as exc:
        summary, code = exc.summary, 130
    print(summary.to_string(index=False))
    for status, verb in (("failed", "failed"), ("interrupted", "were interrupted")):
        bad = summary[summary.status == status]
        if len(bad):
            print(f"tpccma sweep: {len(bad)} of {len(summary)} runs {verb}:", file=sys.stderr)
            for row in bad.itertuples():
                where = f" (see {row.notebook})" if isinstance(row.notebook, str) else ""
                print(f"  {row.run_dir}: {row.error}{where}", file=sys.stderr)
            code = code or 1
    if code == 130:
        print(
            "tpccma sweep: interrupted; finished runs are kept, rerun the same command to do "
            "the rest.",
            file=sys.stderr,
        )
    return code


def _cmd_report(args: argparse.Namespace) -> int:
    from tpccma_lib.app.notebooks import run_all, write_report

    names = args.only.split(",") if args.only else None
    params = _params(args.param)
    executed = run_all(names, args.out, params)
    index = write_report(executed, args.reports)
    print(f"report written: {index}")
    return 0


def _cmd_readme(args: argparse.Namespace) -> int:
    from tpccma_lib.app.readme import (
        draw_readme_figure,
        update_calibration_section,
        update_cost_section,
        update_readme,
    )
    from tpccma_lib.evaluation.model_report import base_model_summary
    from tpccma_lib.experiment import Experiment
    from tpccma_lib.notebook import repo_root

    exp = Experiment(progress=False)
    summary = base_model_summary(exp, exp.base_model())
    print(summary)
    readme = Path(args.readme) if args.readme else repo_root() / "README.md"
    written = update_readme(readme, Path(args.sweep), base_text=summary)
    figure = draw_readme_figure(readme.parent / "docs" / "pareto.png", Path(args.sweep))
    print(f"README figure redrawn from the same runs: {figure}")
    written += update_cost_section(readme)  # from benchmarks/results/cost_vitb32_*.csv
    calibration = repo_root() / "benchmarks" / "results" / "cma_weight_calibration.csv"
    written += update_calibration_section(readme, calibration)
    print(f"README sections updated: {written}")
    return 0


def _cmd_refresh(args: argparse.Namespace) -> int:
    from tpccma_lib.app.notebooks import refresh_stored_outputs

    refresh_stored_outputs(args.only.split(",") if args.only else None)
    return 0


def _prepare_items(words: list[str]) -> list[tuple[str, ...]]:
    """``coco cifar10 clip ViT-B-32 openai`` -> [("coco",), ("cifar10",), ("clip", NAME, TAG)]."""
    from tpccma_lib.data.prepare import DATASETS

    items: list[tuple[str, ...]] = []
    rest = list(words)
    while rest:
        word = rest.pop(0)
        if word == "clip":
            if len(rest) < 2 or "clip" in rest[:2] or any(w in DATASETS for w in rest[:2]):
                raise ValueError(
                    "`prepare clip` needs a model name and a pretrained tag: "
                    "`tpccma prepare clip ViT-B-32 openai`."
                )
            items.append(("clip", rest.pop(0), rest.pop(0)))
        elif word in DATASETS:
            items.append((word,))
        else:
            raise ValueError(
                f"cannot prepare {word!r}: choose from {sorted(DATASETS)} or `clip NAME TAG` "
                "(e.g. `tpccma prepare coco cifar10 clip ViT-B-32 openai`)."
            )
    return items


def _cmd_prepare(args: argparse.Namespace) -> int:
    from tpccma_lib.data import prepare
    from tpccma_lib.models.weights import fetch_open_clip_weights

    for item in _prepare_items(args.names):
        if item[0] == "clip":
            _, name, tag = item
            print(f"clip {name} {tag}: weights at {fetch_open_clip_weights(name, tag)}")
        else:
            name = item[0]
            print(f"{name}: ready at {prepare(name, root=Path(args.root) if args.root else None)}")
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from tpccma_lib.app.analyze import analyze_file

    analysis = analyze_file(
        args.npz, args.out, fit_fraction=args.fit_split_fraction, seed=args.seed
    )
    print(analysis.tables_text())
    print(f"written: {analysis.summary_csv} and {analysis.report_md}")
    return 0


COMMANDS = {
    "prepare": _cmd_prepare,
    "pretrain": _cmd_pretrain,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "sweep": _cmd_sweep,
    "report": _cmd_report,
    "readme": _cmd_readme,
    "refresh-notebooks": _cmd_refresh,
    "analyze": _cmd_analyze,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tpccma_lib.locks import RunLockedError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, OSError, RunLockedError) as exc:  # OSError: unwritable, disk full, ...
        print(f"tpccma {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tpccma {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
