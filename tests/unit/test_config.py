"""Config loading, validation messages and --set overrides."""
from __future__ import annotations

import pytest

from engine.config import ConfigError, ExperimentConfig, apply_overrides, list_config_paths, load_config

from tests.conftest import CONFIGS

SEED = {
    "resnet18_baseline": 44.26, "resnet18_augment": 36.48, "resnet18_baseline_wd01": 40.12,
    "resnet18_baseline_lbsmooth": 44.81, "resnet18_pretrained": 56.70, "resnet18_pretrained_arcface": 57.92,
    "resnet18_pretrained_arcface_224x224": 79.57, "resnet50_pretrained_arcface": 61.76,
    "resnet50_pretrained_arcface_224x224": 81.21, "resnet18_pretrained_arcface_kd": 57.37,
    "resnet18_pretrained_arcface_mst": None,
}


def test_all_seed_experiments_present_with_reference():
    names = {p.stem for p in list_config_paths(CONFIGS)}
    assert set(SEED) <= names
    for name, acc in SEED.items():
        assert load_config(name, configs_dir=CONFIGS).reference.accuracy == acc


@pytest.mark.parametrize("name", sorted(SEED))
def test_seed_common_settings_are_exact(name):
    cfg = load_config(name, configs_dir=CONFIGS)
    assert cfg.train.batch_size == 250 and cfg.train.epochs == 200
    assert cfg.optim.name == "adamw" and cfg.optim.lr == 1e-3 and tuple(cfg.optim.betas) == (0.9, 0.999)
    assert cfg.optim.weight_decay == (0.1 if name.endswith("wd01") else 1e-3)
    assert cfg.schedule.name == "multistep" and cfg.schedule.interval == "step"
    assert cfg.schedule.milestones == [100000, 200000] and cfg.schedule.gamma == 0.316
    assert cfg.train.grad_clip == 5 and cfg.train.precision == "fp32"
    assert cfg.data.normalize == "none" and cfg.data.shuffle is False
    assert cfg.optim.no_decay == "bias"  # Otter: parameters named *bias* get no weight decay
    assert "Otter" in cfg.reference.source and "*bias*" in cfg.reference.source
    if "arcface" in name:
        assert cfg.model.head == "margin" and cfg.model.hid_dim == 512
        assert (cfg.loss.margin, cfg.loss.s, cfg.loss.m) == ("arcface", 8.0, 0.35)
    assert cfg.model.pretrained == ("pretrained" in name)
    assert cfg.data.image_size == (224 if name.endswith("224x224") else 32)


def test_seed_specific_settings():
    assert load_config("resnet18_baseline_lbsmooth", configs_dir=CONFIGS).loss.label_smoothing == 0.1
    assert load_config("resnet18_augment", configs_dir=CONFIGS).data.augment == "albumentations"
    assert load_config("resnet50_pretrained_arcface", configs_dir=CONFIGS).model.backbone == "resnet50"
    kd = load_config("resnet18_pretrained_arcface_kd", configs_dir=CONFIGS).loss.kd
    assert (kd.teacher, kd.temperature, kd.alpha) == ("resnet50_pretrained_arcface_224x224", 4.0, 0.7)
    assert kd.teacher_mode == "train"  # the seed's frozen teacher is never put in eval mode
    kd_source = load_config("resnet18_pretrained_arcface_kd", configs_dir=CONFIGS).reference.source
    assert "epoch=177" in kd_source and "not its best" in kd_source
    mst = load_config("resnet18_pretrained_arcface_mst", configs_dir=CONFIGS)
    assert mst.data.train_sizes == [32, 64] and mst.data.image_size == 32
    assert "warm start" in load_config("resnet18_pretrained_arcface_224x224", configs_dir=CONFIGS).reference.source


def test_new_fields_default_to_what_earlier_runs_did():
    """A run started before optim.no_decay / loss.kd.teacher_mode existed has a config.yaml
    without them: resumed, it must train as it started (one decayed group, an eval-mode teacher)."""
    cfg = ExperimentConfig.model_validate({"name": "old", "loss": {"kd": {"teacher": "t"}}})
    assert cfg.optim.no_decay == "none" and cfg.loss.kd.teacher_mode == "eval"
    with pytest.raises(ConfigError, match="optim.no_decay"):
        load_config("resnet18_baseline", ["optim.no_decay=all"], CONFIGS)
    with pytest.raises(ConfigError, match="train_sizes"):
        load_config("resnet18_baseline", ["data.train_sizes=[32, 32]"], CONFIGS)


def test_our_recipe_fixes_the_stem_and_cites_its_source():
    cfg = load_config("resnet18_cifar_sgd", configs_dir=CONFIGS)
    assert cfg.model.stem == "cifar" and cfg.optim.name == "sgd" and cfg.data.augment == "crop_flip"
    assert cfg.schedule.name == "cosine" and cfg.reference.accuracy and cfg.reference.source
    # its figure comes from weiaicunzai/pytorch-cifar100, whose recipe differs: the reference says how
    for difference in ("RandomRotation(15)", "60/120/160", "gamma 0.2", "without Nesterov"):
        assert difference in cfg.reference.source


def test_config_is_frozen():
    cfg = load_config("resnet18_baseline", configs_dir=CONFIGS)
    with pytest.raises(Exception):
        cfg.train.epochs = 3  # type: ignore[misc]


def test_overrides_apply_with_validation():
    cfg = load_config("resnet18_baseline", ["train.epochs=3", "optim.lr=0.01", "data.train_limit=100"], CONFIGS)
    assert (cfg.train.epochs, cfg.optim.lr, cfg.data.train_limit) == (3, 0.01, 100)
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_config("resnet18_baseline", ["train.epochs=zero"], CONFIGS)
    with pytest.raises(ConfigError, match=r"train\.nope: unknown key"):
        load_config("resnet18_baseline", ["train.nope=1"], CONFIGS)
    with pytest.raises(ConfigError, match="KEY.PATH=VALUE"):
        load_config("resnet18_baseline", ["train.epochs"], CONFIGS)


@pytest.mark.parametrize("text, fragment", [
    ("name: x\ntrain: {epochs: 0}\n", "train.epochs"),
    ("name: x\ntrain: {batch_size: 0}\n", "train.batch_size"),
    ("name: x\nmodel: {head: margin}\n", "model.head: margin needs loss.margin"),
    ("name: x\nloss: {margin: arcface}\n", "loss.margin: arcface needs model.head: margin"),
    ("name: x\nbogus: 1\n", "bogus: unknown key"),
    ("name: x\ndata: {image_size: big}\n", "data.image_size"),
    ("name: x\noptim: {name: lion}\n", "optim.name"),
    ("name: [\n", "invalid YAML"),
    ("", "expected a YAML mapping"),
    ("name: x\nname: y\n", "duplicate key"),
    ("!!python/object/apply:os.system ['echo hi']\n", "invalid YAML"),
    ("name: ../evil\n", "plain file name"),
])
def test_bad_config_files_name_the_problem(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    message = str(info.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_alias_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i-1}"] * 10) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\nname: x\n")
    with pytest.raises(ConfigError, match="alias"):
        load_config(str(path))


def test_apply_overrides_creates_sections():
    raw = apply_overrides({"name": "x"}, ["loss.kd.teacher=t"])
    assert raw["loss"]["kd"]["teacher"] == "t"
    assert ExperimentConfig.model_validate({"name": "x", "model": {"head": "margin"}, "loss": {"margin": "cosface"}})
