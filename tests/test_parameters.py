"""One name per setting: CLI flags, notebook parameters and library fields agree.

`--param` values are Python literals; a parameter no notebook declares is an error; a notebook
parameter named like a settings field flows into that settings object; the fine-tune recipe
(`FINETUNE_CONFIG`) is the same whichever entry point runs it.
"""

from __future__ import annotations

import ast
from dataclasses import fields

import papermill as pm
import pytest
import torch

from tpccma_lib import experiment
from tpccma_lib.app.cli import build_parser, dataclass_from_args, main, parse_param_value
from tpccma_lib.app.notebooks import NOTEBOOKS, check_parameter_names, notebook_dir
from tpccma_lib.app.sweep import SweepError, run_sweep
from tpccma_lib.data.config import DataConfig
from tpccma_lib.experiment import FINETUNE_CONFIG, finetune_config
from tpccma_lib.models import ModelConfig
from tpccma_lib.training.loop import TrainConfig

SETTINGS = {"DataConfig": DataConfig, "ModelConfig": ModelConfig, "TrainConfig": TrainConfig}
#: (notebook, parameter) named like a settings field that the notebook uses in that field's
#: meaning without building the settings object; each with its reason.
SAME_MEANING = {
    ("02_cma_loss", "distribution_term"): "D of L_CMA in the linear-map experiment",
}


def _defaults(name: str) -> dict[str, object]:
    declared = pm.inspect_notebook(str(notebook_dir() / f"{name}.ipynb"))
    return {k: ast.literal_eval(v["default"]) for k, v in declared.items()}


def _source(name: str) -> str:
    import nbformat

    nb = nbformat.read(notebook_dir() / f"{name}.ipynb", as_version=4)
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("False", False),
        ("True", True),
        ("None", None),
        ("0.5", 0.5),
        ("200", 200),
        ("'ViT-B-32'", "ViT-B-32"),
        ('"open_clip"', "open_clip"),
        ("open_clip", "open_clip"),  # a bare word is a string
        ("ViT-B-32", "ViT-B-32"),
        ("true", True),  # JSON spellings still work
        ("null", None),
        ("[0.0, 0.5]", [0.0, 0.5]),
        ("{'ablation': False}", {"ablation": False}),
    ],
)
def test_param_values_are_python_literals(text, value):
    parsed = parse_param_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_unknown_report_parameter_is_an_error_naming_the_notebooks(tmp_path, capsys):
    rc = main(
        ["report", "--out", str(tmp_path / "nb"), "--reports", str(tmp_path), "--param", "foo=1"]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "foo" in err and "01_gap_decomposition" in err and "n_train" in err
    assert not (tmp_path / "nb").exists()  # refused before any notebook ran


def test_parameter_of_another_notebook_is_accepted_by_the_check():
    check_parameter_names({"alpha_target": 0.5}, ["03_curriculum_training", "04_evaluation"])
    with pytest.raises(ValueError, match="alpha_target"):
        check_parameter_names({"alpha_target": 0.5}, ["01_gap_decomposition"])


@pytest.mark.parametrize("param", ["alpha_target", "seed"])
def test_sweep_refuses_a_parameter_its_grid_sets(tmp_path, param):
    with pytest.raises(SweepError, match="--alphas / --seeds"):
        run_sweep([0.0], [0], out_dir=tmp_path, parameters={param: 1})


def test_bad_param_syntax_is_an_error(capsys):
    assert main(["report", "--param", "smoke"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_parameters_named_like_settings_flow_into_them(name):
    """No notebook uses a settings field's name for something else (notebook 02's toy map has
    its own names), and the model name is `name` everywhere, as in ModelConfig and the CLI."""
    declared = _defaults(name)
    source = _source(name)
    assert "model" not in declared, "the model's name is the parameter `name` (ModelConfig.name)"
    for param in declared:
        owners = [c for c, cls in SETTINGS.items() if param in {f.name for f in fields(cls)}]
        if not owners or (name, param) in SAME_MEANING:
            continue
        builds = (
            any(owner in source for owner in owners)
            or ("TrainConfig" in owners and "finetune_config(" in source)
            or ({"DataConfig", "ModelConfig"} & set(owners) and "Experiment.from_params(" in source)
        )
        if name == "05_alpha_sweep":  # passes its run settings on to notebooks 03 + 04
            builds = builds or f'"{param}": {param}' in source
        assert builds, f"{name} declares {param!r} but builds none of {owners} from it"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_defaults_are_the_library_defaults(name):
    """A notebook's default for a settings field is the library's (FINETUNE_CONFIG for training),
    so a notebook run and a CLI run with the same flags make the same model."""
    declared = _defaults(name)
    expected = {
        **{f.name: getattr(ModelConfig(), f.name) for f in fields(ModelConfig)},
        **{f.name: getattr(DataConfig(), f.name) for f in fields(DataConfig)},
        **{f.name: getattr(FINETUNE_CONFIG, f.name) for f in fields(TrainConfig)},
    }
    for param, default in declared.items():
        if param in expected and (name, param) not in SAME_MEANING:
            assert default == expected[param], f"{name}: {param} = {default!r}"


def test_cli_train_uses_the_finetune_recipe():
    args = build_parser().parse_args(["train", "--alpha-target", "0.05", "--out", "x"])
    cfg = dataclass_from_args(TrainConfig, args, base=FINETUNE_CONFIG)
    assert cfg == finetune_config({"alpha_target": 0.05})
    assert cfg.lr == FINETUNE_CONFIG.lr < experiment.PRETRAIN_CONFIG.lr
    assert "(default: 0.0001)" in build_parser()._subparsers._group_actions[0].choices[
        "train"
    ].format_help().replace("\n", " ").replace("  ", " ")


@pytest.mark.slow
def test_cli_train_and_notebook_03_make_the_same_model(tmp_path, monkeypatch):
    """`tpccma train --alpha-target 0.5` and notebook 03 at alpha 0.5 (smoke sizes) write the
    same final checkpoint."""
    from tpccma_lib.app.notebooks import kernel_env, run_notebook

    runs = tmp_path / "runs"
    monkeypatch.setenv("TPCCMA_RUNS", str(runs))
    torch.set_num_threads(1)
    with kernel_env({"TPCCMA_THREADS": "1", "TPCCMA_RUNS": str(runs)}):
        run_notebook(
            "03_curriculum_training",
            tmp_path / "03.ipynb",
            {
                "smoke": True,
                "ablation": False,
                "alpha_target": 0.5,
                "out_dir": str(tmp_path / "nb"),
            },
        )
    smoke = ["--n-train", "300", "--n-val", "100", "--n-test", "200", "--steps", "30"]
    argv = ["train", *smoke, "--eval-every", "10", "--alpha-target", "0.5", "--runs", str(runs)]
    assert main([*argv, "--out", str(tmp_path / "cli")]) == 0
    nb = torch.load(tmp_path / "nb" / "final.pt", map_location="cpu", weights_only=False)
    cli = torch.load(tmp_path / "cli" / "final.pt", map_location="cpu", weights_only=False)
    assert nb["train_config"] == cli["train_config"]
    states = nb["state_dict"], cli["state_dict"]
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=0, atol=1e-6)


def test_experiment_from_params_is_a_notebooks_one_set_up_call(tmp_path, monkeypatch):
    """Smoke sizes shrink the parameters in place; every settings name maps onto its field."""
    from tpccma_lib.experiment import SMOKE_SIZES, Experiment

    monkeypatch.setenv("TPCCMA_RUNS", str(tmp_path / "runs"))
    params = {
        "smoke": True,
        "n_train": 3000,
        "n_val": 500,
        "n_test": 1000,
        "seed": 3,
        "name": "effnetlite0-minilm",
        "toy_steps": 200,
        "unrelated": object(),
    }
    exp = Experiment.from_params(params, smoke={"toy_steps": 40})
    assert {k: params[k] for k in SMOKE_SIZES} == SMOKE_SIZES and params["toy_steps"] == 40
    assert (exp.data.n_train, exp.data.n_test, exp.data.seed) == (300, 200, 3)
    # `seed` is the data world's and the batches' seed (DataConfig, TrainConfig), as the CLI's
    # --seed; the heads' initialisation has its own name (ModelConfig.init_seed)
    assert exp.model_config.init_seed == 0
    assert exp.paths is not None and exp.paths.runs == tmp_path / "runs"
    full = {"smoke": False, "n_train": 3000, "n_val": 500, "n_test": 1000}
    assert Experiment.from_params(full).data.n_train == 3000 and full["n_train"] == 3000


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_parameter_line_is_declared_to_papermill(name: str) -> None:
    """papermill parses every assignment of the parameters cell (it skips a line it cannot
    parse with only a warning, and the parameter would then be undeclared)."""
    import re

    import nbformat

    nb = nbformat.read(notebook_dir() / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    assigned = [m.group(1) for m in re.finditer(r"^(\w+)\s*=", cell.source, re.M)]
    assert sorted(_defaults(name)) == sorted(assigned)
