"""Sweep expansion: comma lists x --seeds into a plan, its order, the group key, refused input."""
from __future__ import annotations

import pytest

from cifar_tui.sweep import group_key, make_plan, parse_sets, plan_lines, split_list
from engine.config import ConfigError

from tests.conftest import CONFIGS


def test_top_level_commas_split_values_but_brackets_braces_and_quotes_keep_them():
    assert split_list("optim.lr=1e-3,3e-3") == ["optim.lr=1e-3", "optim.lr=3e-3"]
    assert split_list("data.train_sizes=[32,64]") == ["data.train_sizes=[32,64]"]
    assert split_list("data.train_sizes=[32,64], [32]") == ["data.train_sizes=[32,64]", "data.train_sizes=[32]"]
    assert split_list("optim.betas=[0.9,0.99],[0.9,0.999]") == ["optim.betas=[0.9,0.99]", "optim.betas=[0.9,0.999]"]
    assert split_list('description="a, b"') == ['description="a, b"']
    assert split_list("description='it''s, fine'") == ["description='it''s, fine'"]
    assert split_list("loss.kd={teacher: a, alpha: 0.5}") == ["loss.kd={teacher: a, alpha: 0.5}"]


@pytest.mark.parametrize("item, fragment", [
    ("data.train_sizes=[32,64],[32", "a bracket is not closed"),
    ("data.train_sizes=32,64]", "a closing ']' without its opening bracket"),
    ("optim.lr=1e-3,,3e-3", "an empty value in the list"),
    ("optim.lr=1e-3,", "an empty value in the list"),
    ('description=a,"b, c', "a quote (\") is not closed"),
    ("optim.lr", "expected KEY.PATH=VALUE"),
])
def test_a_malformed_list_is_refused_with_one_line_naming_it(item, fragment):
    with pytest.raises(ConfigError) as err:
        split_list(item)
    assert fragment in str(err.value) and item in str(err.value) and "\n" not in str(err.value)


def test_a_single_malformed_value_is_left_to_yaml_which_names_the_key():
    assert split_list("data.train_sizes=[32,64") == ["data.train_sizes=[32,64"]
    with pytest.raises(ConfigError, match=r"--set data.train_sizes: invalid YAML"):
        make_plan(["resnet18_baseline"], ["data.train_sizes=[32,64"], 1, configs_dir=CONFIGS, study="s")


def test_the_grid_times_the_seeds_in_order_seeds_outermost_last_list_fastest():
    plan = make_plan(["resnet18_baseline"], ["optim.lr=1e-3,3e-3", "optim.weight_decay=1e-4,1e-3"], 3,
                     extra=["data.source=synthetic"], configs_dir=CONFIGS, study="s")
    assert len(plan.runs) == 12 and [r.index for r in plan.runs] == list(range(1, 13))
    points = [(r.seed, r.cfg.optim.lr, r.cfg.optim.weight_decay) for r in plan.runs]
    assert points == [(seed, lr, wd) for seed in (0, 1, 2) for lr in (1e-3, 3e-3) for wd in (1e-4, 1e-3)]
    first = plan.runs[0]
    assert first.overrides == ("data.source=synthetic", "optim.lr=1e-3", "optim.weight_decay=1e-4", "train.seed=0")
    assert first.cfg.data.source == "synthetic" and first.cfg.train.seed == 0
    # the group: config + overrides, canonical and sorted, the seed left out; one group per grid point
    assert first.group == "resnet18_baseline data.source=synthetic optim.lr=0.001 optim.weight_decay=0.0001"
    assert len(plan.groups()) == 4
    assert {r.group for r in plan.runs if r.seed == 2} == set(plan.groups())
    assert plan.describe() == "12 runs (2 optim.lr x 2 optim.weight_decay x 3 seeds), 4 groups"
    lines = plan_lines(plan, {5: "completed: x"})
    assert lines[0] == ("study s: 12 runs (2 optim.lr x 2 optim.weight_decay x 3 seeds), 4 groups · every group: "
                        "resnet18_baseline · data=synthetic")
    assert lines[2].split()[2:] == ["lr=1e-3", "wd=1e-4"]  # each run's group by what sets it apart
    assert len(lines) == 14 and lines[6].endswith("(completed: x)") and " 1  " in lines[6]


def test_seeds_count_from_the_configs_seed_and_one_seed_keeps_it():
    plan = make_plan(["resnet18_baseline"], ["train.seed=7"], 2, configs_dir=CONFIGS, study="s")
    assert [r.seed for r in plan.runs] == [7, 8] and plan.runs[1].cfg.train.seed == 8
    assert plan.runs[0].group == plan.runs[1].group == "resnet18_baseline"
    single = make_plan(["resnet18_baseline"], [], 1, configs_dir=CONFIGS, study="s")
    assert [r.seed for r in single.runs] == [0] and single.runs[0].overrides == ()


def test_the_group_key_is_canonical_and_leaves_out_seed_device_and_data_root():
    a = group_key("cfg", ["optim.lr=1e-3", "train.seed=3", "train.device=cuda:1", "data.train_sizes=[32, 64]"])
    b = group_key("cfg", ["data.train_sizes=[32,64]", "optim.lr=0.001", "data.root=/data", "train.seed=4"])
    assert a == b == "cfg data.train_sizes=[32,64] optim.lr=0.001"
    assert group_key("cfg", ["optim.lr=1", "optim.lr=1.0"]) == "cfg optim.lr=1"  # last wins, 1.0 is 1
    assert group_key("cfg", ["description=two words"]) == 'cfg description="two words"'


@pytest.mark.parametrize("sets, seeds, fragment", [
    (["optim.lr=1e-3,0.001"], 1, "the value 0.001 is listed twice (as '1e-3' and '0.001')"),
    (["optim.lr=1e-3,1e-3"], 1, "the value 0.001 is listed twice; each value once"),
    (["data.train_sizes=[32,64],[32, 64]"], 1, "the value [32,64] is listed twice"),
    (["optim.lr=1e-3,3e-3", "optim.lr=1e-2,3e-2"], 1, "optim.lr: swept twice"),
    (["optim.lr=1e-3,3e-3", "optim.lr=1e-2"], 1, "optim.lr: swept and also set to one value"),
    (["train.seed=1,2"], 3, "--seeds 3 and a list of train.seed"),
    (["optim.lr=1e-3,-1"], 1, "optim.lr: Input should be greater than 0"),
    (["optim.nope=1,2"], 1, "optim.nope: unknown key"),
])
def test_duplicates_conflicts_and_bad_values_are_refused_before_anything_runs(sets, seeds, fragment):
    with pytest.raises(ConfigError) as err:
        make_plan(["resnet18_baseline"], sets, seeds, configs_dir=CONFIGS, study="s")
    assert fragment in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_parse_sets_separates_fixed_values_from_swept_lists():
    fixed, axes = parse_sets(["train.epochs=3", "optim.lr=1e-3,3e-3"], ["data.source=synthetic"])
    assert fixed == ["train.epochs=3", "data.source=synthetic"]
    assert [(a.key, a.values) for a in axes] == [("optim.lr", ("optim.lr=1e-3", "optim.lr=3e-3"))]


def test_several_configs_and_a_study_name_that_is_not_a_plain_name():
    plan = make_plan(["resnet18_baseline", "resnet18_baseline_lbsmooth"], ["optim.lr=1e-3,3e-3"], 1,
                     configs_dir=CONFIGS, study="two")
    assert [(r.config_name, r.cfg.optim.lr) for r in plan.runs] == [
        ("resnet18_baseline", 1e-3), ("resnet18_baseline", 3e-3),
        ("resnet18_baseline_lbsmooth", 1e-3), ("resnet18_baseline_lbsmooth", 3e-3)]
    with pytest.raises(ConfigError, match="--study '../x': expected a plain name"):
        make_plan(["resnet18_baseline"], [], 1, configs_dir=CONFIGS, study="../x")
