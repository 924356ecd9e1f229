"""Group names (cifar_tui.names): a group is named by the keys that differ among the groups listed
with it, values short (three significant digits, more only where two groups would read the same),
what they all share said once; a tune trial by its number and values; full keys kept in JSON."""
from __future__ import annotations

import json

import pytest

from cifar_tui.names import name_groups, parse_group, short_number
from cifar_tui.studies import group_stats
from cifar_tui.sweep import group_key


@pytest.mark.parametrize("x,text", [(0.001, "1e-3"), (0.003, "3e-3"), (0.005999376004497892, "6e-3"), (0.1, "0.1"),
                                    (0.05, "0.05"), (0.0316, "0.0316"), (5e-4, "5e-4"), (2.5e-5, "2.5e-5"),
                                    (200, "200"), (224.0, "224"), (1234.5, "1230"), (12.345, "12.3"), (0, "0"),
                                    (-0.002, "-2e-3"), (0.0099999, "0.01"), (1e7, "1e7")])
def test_numbers_in_short_canonical_form_with_three_significant_digits(x, text):
    assert short_number(x) == text


def test_an_lr_sweep_is_named_by_lr_and_what_the_groups_share_is_said_once():
    extra = ["data.source=synthetic", "data.test_limit=100", "train.epochs=3"]
    groups = [group_key("resnet18_baseline", [*extra, f"optim.lr={lr}", "train.seed=1"]) for lr in ("1e-3", "0.003")]
    names = name_groups(groups)
    assert [names[g] for g in groups] == ["lr=1e-3", "lr=3e-3"]  # not `...optim.lr=0.00` twice
    assert names.title == "resnet18_baseline · data=synthetic test_limit=100 epochs=3"


def test_values_that_would_read_the_same_get_more_digits_and_configs_name_themselves():
    groups = ["r optim.lr=0.0010001", "r optim.lr=0.0010002", "r"]
    names = name_groups(groups)
    assert [names[g] for g in groups] == ["lr=1.0001e-3", "lr=1.0002e-3", "(defaults)"]
    mixed = name_groups(["resnet18_baseline data.source=synthetic", "resnet18_cutmix data.source=synthetic"])
    assert list(mixed.labels.values()) == ["resnet18_baseline", "resnet18_cutmix"] and mixed.title == "data=synthetic"
    clash = name_groups(["x model.weight_decay=0.1 optim.weight_decay=0.2", "x model.weight_decay=0.3 optim.weight_decay=0.2"])
    assert list(clash.labels.values()) == ["model.weight_decay=0.1", "model.weight_decay=0.3"]  # `wd` would be ambiguous
    assert clash.title == "x · optim.weight_decay=0.2"


def test_tune_trials_are_named_by_trial_number_plus_their_values():
    groups = ["resnet18_baseline optim.lr=0.005999376004497892 optim.weight_decay=0.0001 trial=3",
              "resnet18_baseline optim.lr=0.0123 optim.weight_decay=0.0001 trial=4"]
    names = name_groups(groups)
    assert [names[g] for g in groups] == ["#3 lr=6e-3", "#4 lr=0.0123"] and names.title == "resnet18_baseline · wd=1e-4"
    assert parse_group(groups[0]).trial == 3 and parse_group(groups[0]).items["optim.lr"] == "0.005999376004497892"


def test_group_stats_rows_carry_the_short_name_and_keep_the_full_key_for_json():
    rows = [{"run_id": f"r{i}", "group_key": f"resnet18_baseline optim.lr={lr}", "config_name": "resnet18_baseline",
             "best_acc": 40.0 + i, "status": "completed", "data_source": "synthetic", "started_at": i, "seed": i}
            for i, lr in enumerate([0.005999376004497892, 0.005999376004497892, 0.02])]
    groups = group_stats(rows)
    assert {g["label"] for g in groups} == {"lr=6e-3", "lr=0.02"}
    assert "resnet18_baseline optim.lr=0.005999376004497892" in json.dumps(groups)  # full precision in JSON
