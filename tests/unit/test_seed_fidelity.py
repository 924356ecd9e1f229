"""The seed's code, not only its configs (issues 9 and 24): each behaviour checked against a reference
built here independently of the engine: the albumentations transforms built directly, the
`*bias*` names read off the model, a multi-scale batch run through a model by hand, a train-mode
teacher forward of the same weights, the teacher fed its own pipeline's batch, the seed's dataset
run through a forked DataLoader as the seed ran it."""
from __future__ import annotations

import copy
import json
import math
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine import data as D
from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from engine.config import ConfigError, DataConfig, ModelConfig, OptimConfig, config_from_dict, load_config
from engine.data.pipeline import MIN_SCALE_GROUP, scale_groups
from engine.hooks import TrainerHook
from engine.models import build_model
from engine.optim import build_optimizer
from engine.trainer import Trainer

from tests.conftest import CONFIGS

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# A tiny, fast stand-in for the seed's models: timm's test_resnet, on a few synthetic images.
TINY_TRAINER = ["data.source=synthetic", "data.train_limit=32", "data.test_limit=16", "train.batch_size=16",
                "train.device=cpu", "train.epochs=1", "model.pretrained=false", "model.backbone=test_resnet",
                "train.keep=best+last"]  # the tests read last.pt of a finished run


@pytest.fixture(autouse=True)
def _restore_determinism():
    # the Trainer switches deterministic algorithms on for CPU runs; leave the process as found
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def hand_arcface(cosine: torch.Tensor, labels: torch.Tensor, s: float = 8.0, m: float = 0.35) -> torch.Tensor:
    """s * cos(theta + m) on the target class, s * cos(theta) elsewhere (the seed's chameleon ArcFace)."""
    out = cosine.clone()
    rows = torch.arange(len(labels))
    out[rows, labels] = torch.cos(torch.acos(cosine[rows, labels].clamp(-1, 1)) + m)
    return out * s


class StopAfterFirstStep(TrainerHook):
    """Records what one training step did, then asks the trainer to stop (it checkpoints and returns)."""

    def __init__(self) -> None:
        self.loss = None
        self.buffers: dict[str, torch.Tensor] = {}

    def step_end(self, trainer, loss, batch_size):
        self.loss = float(loss.detach())
        self.buffers = {k: v.clone() for k, v in trainer.model.named_buffers()}
        trainer.stop.flag = True


def record_batches(trainer: Trainer) -> list:
    """Wrap the trainer's pipeline so the test sees each (x, y) it trains on."""
    seen: list = []
    original = trainer.pipeline.train_batches

    def recording(*args, **kwargs):
        for x, y in original(*args, **kwargs):
            seen.append((tuple(g.clone() for g in x) if isinstance(x, tuple) else x.clone(), y.clone()))
            yield x, y

    trainer.pipeline.train_batches = recording
    return seen


# ---------------------------------------------------------------------------
# 1. the augment recipe: the bare transforms with albumentations 2.0's defaults


def test_seed_augment_is_the_bare_transforms_with_the_2_0_defaults():
    import albumentations as A

    assert A.__version__.startswith("2.0."), "pyproject.toml pins the seed's albumentations series"
    with pytest.warns(UserWarning, match="ShiftScaleRotate is a special case of Affine"):  # deprecated in 2.0
        reference = A.OneOf([A.ShiftScaleRotate(), A.CoarseDropout(), A.ColorJitter(), A.HorizontalFlip(),
                             A.VerticalFlip()], p=1)
    ds = D.synthetic_dataset(0, 8, 4)
    pipeline = D.make_pipeline(ds, DataConfig(source="synthetic", augment="albumentations", num_workers=0), "cpu")
    try:
        built = pipeline._set._aug  # what the workers apply to each image
        assert A.to_dict(built) == A.to_dict(reference)
        ssr, drop, jitter = (t.get_transform_init_args() for t in built.transforms[:3])
        assert ssr["border_mode"] == 0 and ssr["fill"] == 0  # cv2.BORDER_CONSTANT, black
        assert drop["num_holes_range"] == (1, 2) and drop["hole_height_range"] == (0.1, 0.2)
        assert jitter["hue"] == (-0.5, 0.5)
    finally:
        pipeline.close()
    # the seed config runs it on every image (DefaultImageAug(p=image_aug_ratio=1))
    assert load_config("resnet18_augment", configs_dir=CONFIGS).data.augment_p == 1.0


def test_pyproject_pins_the_2_0_series():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"albumentations>=2.0,<2.1"' in text


# ---------------------------------------------------------------------------
# 2. weight decay: Otter's *bias* rule, timm's 1-D rule, none


@pytest.fixture(scope="module")
def margin_model() -> torch.nn.Module:
    return build_model(ModelConfig(backbone="resnet18", head="margin"))


def _groups(optimizer) -> dict[float, list[str]]:
    state = optimizer.state_dict()  # what a checkpoint stores
    return {g["weight_decay"]: g["param_names"] for g in state["param_groups"]}


def test_bias_rule_exempts_exactly_the_parameters_named_bias(margin_model):
    names = [n for n, _ in margin_model.named_parameters()]
    bias_names = [n for n in names if "bias" in n]
    assert len(bias_names) > 20  # every BatchNorm's bias (resnet18's convs have none) and the head's
    groups = _groups(build_optimizer(margin_model, OptimConfig(no_decay="bias", weight_decay=1e-3)))
    assert groups == {1e-3: [n for n in names if "bias" not in n], 0.0: bias_names}


def test_timm_rule_exempts_one_dimensional_tensors(margin_model):
    names = [n for n, _ in margin_model.named_parameters()]
    one_d = [n for n, p in margin_model.named_parameters() if p.ndim <= 1]
    groups = _groups(build_optimizer(margin_model, OptimConfig(name="sgd", no_decay="bias_norm", weight_decay=5e-4)))
    assert groups == {0.0: one_d, 5e-4: [n for n in names if n not in one_d]}
    assert "head.bn.weight" in one_d and "head.weight" not in one_d  # norm weights, not the class weights


def test_no_rule_decays_everything_in_one_group(margin_model):
    optimizer = build_optimizer(margin_model, OptimConfig(no_decay="none", weight_decay=1e-3))
    assert _groups(optimizer) == {1e-3: [n for n, _ in margin_model.named_parameters()]}


def test_checkpoint_shows_the_groups_and_an_old_layout_resumes_or_is_refused(tmp_path, capsys):
    """A run started before optim.no_decay: its checkpoint has one unnamed group and its
    config.yaml no no_decay key. Resumed, it trains on; told to use another rule, it is refused
    with one line (exit 2), not a traceback."""
    from engine.train import main
    import yaml

    home, data = tmp_path / "runs", tmp_path / "data"
    cfg = load_config("resnet18_baseline", TINY_TRAINER, CONFIGS)
    trainer = Trainer(cfg, run_id="new-run", home=home, data_root=data)
    trainer.prepare()
    assert trainer.run() == 0
    last = load_checkpoint(home / "new-run" / "checkpoints" / "last.pt")
    names = [n for n, _ in build_model(cfg.model).named_parameters()]
    assert {g["weight_decay"]: g["param_names"] for g in last["optimizer"]["param_groups"]} == {
        1e-3: [n for n in names if "bias" not in n], 0.0: [n for n in names if "bias" in n]}

    # the same run as the engine wrote it before this change
    old_cfg = load_config("resnet18_baseline", [*TINY_TRAINER, "optim.no_decay=none"], CONFIGS)
    old = Trainer(old_cfg, run_id="old-run", home=home, data_root=data)
    old.prepare()
    assert old.run() == 0
    run_dir = home / "old-run"
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    (group,) = state["optimizer"]["param_groups"]
    del group["param_names"]
    state.pop("format"), state.pop("version")
    save_checkpoint(state, run_dir / "checkpoints" / "last.pt")
    raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    del raw["optim"]["no_decay"]
    raw["train"]["epochs"] = 2
    (run_dir / "config.yaml").write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["--resume", "old-run", "--home", str(home), "--data-root", str(data)]) == 0
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == 2

    raw["optim"]["no_decay"] = "bias"
    raw["train"]["epochs"] = 3
    (run_dir / "config.yaml").write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["--resume", "old-run", "--home", str(home), "--data-root", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "last.pt" in err and "optim.no_decay" in err and "1 parameter group" in err


def test_restore_refuses_a_mismatched_optimizer_in_process(tmp_path):
    cfg = load_config("resnet18_baseline", [*TINY_TRAINER, "optim.no_decay=bias"], CONFIGS)
    first = Trainer(load_config("resnet18_baseline", [*TINY_TRAINER, "optim.no_decay=none"], CONFIGS),
                    run_id="r", home=tmp_path, data_root=tmp_path)
    first.prepare()
    assert first.run() == 0
    again = Trainer(cfg, run_id="r", home=tmp_path, data_root=tmp_path, resume=True)
    with pytest.raises(CheckpointError, match="parameter group"):
        again.prepare()


# ---------------------------------------------------------------------------
# 3. multi-scale: a size per image, one forward per size group


def test_scale_groups_keep_every_rank_forwarding_enough_images():
    assert scale_groups(torch.tensor([0, 1, 0, 1, 1, 0]), 2, 1).tolist() == [0, 1, 0, 1, 1, 0]
    # a lone 64 cannot run BatchNorm by itself: it joins the 32s
    assert scale_groups(torch.tensor([0, 0, 0, 1, 0, 0]), 2, 1).tolist() == [0] * 6
    # rank 0 gets images 0, 2, 4, 6 -> sizes 0, 0, 1, 0: one image of size 1 there; rank 1 has 1, 1, 1, 0
    # -> size 0 has one image on rank 1: neither size has 2 on every rank, so all take the largest
    assert scale_groups(torch.tensor([0, 1, 0, 1, 1, 1, 0, 0]), 2, 2).tolist() == [1] * 8
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        world = int(torch.randint(1, 4, (1,), generator=g))
        choice = torch.randint(3, (int(torch.randint(world * 2, 40, (1,), generator=g)),), generator=g)
        groups = scale_groups(choice, 3, world)
        counts = torch.zeros(world, 3, dtype=torch.int64)
        for i, size in enumerate(groups.tolist()):
            counts[i % world, size] += 1
        for size in range(3):  # a size runs on every rank with enough images, or on none
            column = counts[:, size]
            assert bool((column == 0).all()) or bool((column >= MIN_SCALE_GROUP).all()) or int((counts.sum(1)).min()) < 2


def test_each_image_gets_its_own_size(tmp_path):
    ds = D.synthetic_dataset(0, 100, 10)
    p = D.DevicePipeline(ds, DataConfig(source="synthetic", train_sizes=[64, 32], shuffle=False), "cpu")
    at_64 = total = 0
    for step, (xs, y) in enumerate(p.train_batches(0, 0, 25)):
        assert isinstance(xs, tuple) and [g.shape[-1] for g in xs] == [32, 64]  # smaller first
        index = list(range(step * 25, step * 25 + 25))  # shuffle off: the step's images in order
        src = torch.from_numpy(ds.train.images[index]).float()
        found, k = [], 0
        for group in xs:
            size = group.shape[-1]
            ref = src if size == 32 else F.interpolate(src, size=(size, size), mode="bilinear", align_corners=False)
            for image in group:  # which of the step's images is this, resized to the group's size?
                distance = (ref / 255 - image).abs().flatten(1).amax(1)
                j = int(distance.argmin())
                assert float(distance[j]) <= 1 / 255 + 1e-6
                assert int(y[k]) == int(ds.train.labels[index[j]])  # the labels follow the images
                found.append(j)
                k += 1
            at_64 += len(group) if size == 64 else 0
        assert sorted(found) == list(range(25))  # every image once
        total += len(y)
        # within a group, the batch's order (as the seed's boolean indexing keeps it)
        n32 = len(xs[0])
        assert found[:n32] == sorted(found[:n32]) and found[n32:] == sorted(found[n32:])
    assert 0.3 < at_64 / total < 0.7  # 32 or 64 with equal chance


def _mst_trainer(tmp_path, *extra) -> Trainer:
    cfg = load_config("resnet18_pretrained_arcface_mst", [*TINY_TRAINER, *extra], CONFIGS)
    trainer = Trainer(cfg, run_id="mst", home=tmp_path / "runs", data_root=tmp_path / "data",
                      hooks=[StopAfterFirstStep()])
    trainer.prepare()
    return trainer


def test_a_batch_with_both_scales_runs_two_forwards_and_one_loss(tmp_path):
    trainer = _mst_trainer(tmp_path, "train.channels_last=false")
    before = copy.deepcopy(trainer.model)
    batches = record_batches(trainer)
    forwards: list[tuple[int, int]] = []
    trainer.model.register_forward_pre_hook(lambda m, args: forwards.append((args[0].shape[0], args[0].shape[-1])))
    assert trainer.run() == 130  # stopped after the first step
    (x, y), = batches
    hook = trainer.hooks[0]
    assert isinstance(x, tuple) and [g.shape[-1] for g in x] == [32, 64]
    assert forwards == [(len(x[0]), 32), (len(x[1]), 64)]  # two forwards, 32 first
    assert len(x[0]) + len(x[1]) == len(y) == 16

    # by hand: the same weights, the 32 group then the 64 group in training mode, one cross-entropy
    ref = before.train()
    with torch.no_grad():
        logits = torch.cat([hand_arcface(ref(x[0]), y[:len(x[0])]), hand_arcface(ref(x[1]), y[len(x[0]):])])
    assert hook.loss == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    # BatchNorm: each group normalised by itself, the 64 group moved the running statistics last
    for name, value in ref.named_buffers():
        torch.testing.assert_close(hook.buffers[name], value, msg=lambda m: f"{name}: {m}")
    wrong_order = copy.deepcopy(before).train()
    with torch.no_grad():
        wrong_order(x[1]), wrong_order(x[0])
    assert not torch.allclose(dict(wrong_order.named_buffers())["head.bn.running_mean"],
                              hook.buffers["head.bn.running_mean"])


def test_multiscale_resume_repeats_the_same_groups(tmp_path):
    a = D.DevicePipeline(D.synthetic_dataset(0, 60, 10), DataConfig(source="synthetic", train_sizes=[32, 64]), "cpu")
    full = [(tuple(g.clone() for g in x), y.clone()) for x, y in a.train_batches(3, 5, 12)]
    tail = list(a.train_batches(3, 5, 12, start_step=2))
    for (xa, ya), (xb, yb) in zip(full[2:], tail):
        assert len(xa) == len(xb) and all(torch.equal(u, v) for u, v in zip(xa, xb)) and torch.equal(ya, yb)


# ---------------------------------------------------------------------------
# 4. the KD teacher: frozen, in training mode (batch statistics), buffers untouched


def _teacher_run(home: Path, image_size: int = 48, normalize: str = "none") -> tuple[str, dict]:
    """A finished teacher run on disk: config.yaml and checkpoints/best.pt, with running statistics
    far from any batch's so that train- and eval-mode outputs differ."""
    cfg = load_config("resnet50_pretrained_arcface_224x224",
                      [*TINY_TRAINER, f"data.image_size={image_size}", f"data.normalize={normalize}"], CONFIGS)
    torch.manual_seed(3)
    model = build_model(cfg.model)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.uniform_(-2, 2)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 3)
    run_dir = home / "teacher-run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(cfg.to_yaml())
    save_checkpoint({"run_id": "teacher-run", "config": cfg.to_dict(), "model": model.state_dict(), "epoch": 1,
                     "best_acc": 1.0}, run_dir / "checkpoints" / "best.pt")
    return "teacher-run", {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_teacher_mode_in_a_training_step(tmp_path, mode):
    home = tmp_path / "runs"
    teacher_id, weights = _teacher_run(home)
    cfg = load_config("resnet18_pretrained_arcface_kd",
                      [*TINY_TRAINER, f"loss.kd.teacher={teacher_id}", f"loss.kd.teacher_mode={mode}",
                       "train.channels_last=false"], CONFIGS)
    trainer = Trainer(cfg, run_id="student", home=home, data_root=tmp_path / "data", hooks=[StopAfterFirstStep()])
    trainer.prepare()
    batches = record_batches(trainer)
    teacher_out: list[torch.Tensor] = []
    teacher_logits = trainer.teacher.logits
    trainer.teacher.logits = lambda x, y: teacher_out.append(teacher_logits(x, y)) or teacher_out[-1]
    assert trainer.run() == 130
    (x, y), = batches

    # the same weights, loaded here, run by hand on the 48x48 resize of the batch
    reference = build_model(load_config("resnet50_pretrained_arcface_224x224", [*TINY_TRAINER], CONFIGS).model)
    reference.load_state_dict(weights)
    reference.train(mode == "train")
    with torch.no_grad():
        expected = hand_arcface(reference(F.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False)), y)
    torch.testing.assert_close(teacher_out[0], expected, rtol=1e-4, atol=1e-5)
    # frozen: its weights and BatchNorm buffers are as its checkpoint has them after the step
    for name, value in trainer.teacher.model.state_dict().items():
        assert torch.equal(value.cpu(), weights[name]), name
    assert not any(p.requires_grad for p in trainer.teacher.model.parameters())
    if mode == "train":  # batch statistics, not the (deliberately odd) running ones
        reference.train(False)
        with torch.no_grad():
            eval_mode = hand_arcface(reference(F.interpolate(x, size=(48, 48), mode="bilinear",
                                                             align_corners=False)), y)
        assert not torch.allclose(teacher_out[0], eval_mode, atol=1e-2)


def test_seed_kd_config_uses_a_train_mode_teacher():
    kd = load_config("resnet18_pretrained_arcface_kd", configs_dir=CONFIGS).loss.kd
    assert kd.teacher_mode == "train"
    assert math.isclose(kd.temperature, 4.0) and math.isclose(kd.alpha, 0.7)


def test_teacher_sees_its_own_normalisation(tmp_path):
    """A teacher trained with normalize: cifar100 distilled into a normalize: none student (issue 24):
    its logits are those of the teacher's own pipeline's batch, not of the student's."""
    home = tmp_path / "runs"
    teacher_id, weights = _teacher_run(home, normalize="cifar100")
    cfg = load_config("resnet18_pretrained_arcface_kd",
                      [*TINY_TRAINER, f"loss.kd.teacher={teacher_id}", "loss.kd.teacher_mode=eval",
                       "train.channels_last=false"], CONFIGS)
    assert cfg.data.normalize == "none" and cfg.data.augment == "none" and not cfg.data.shuffle
    trainer = Trainer(cfg, run_id="student", home=home, data_root=tmp_path / "data", hooks=[StopAfterFirstStep()])
    trainer.prepare()
    teacher_out: list[torch.Tensor] = []
    teacher_logits = trainer.teacher.logits
    trainer.teacher.logits = lambda x, y: teacher_out.append(teacher_logits(x, y)) or teacher_out[-1]
    assert trainer.run() == 130

    # the same images as the teacher's own pipeline makes them (at 32x32: uint8 resizing rounds), then 48x48
    own = D.DevicePipeline(trainer.dataset, trainer.teacher.cfg.data.model_copy(update={"image_size": 32}), "cpu",
                           channels_last=False)
    x, y = next(own.train_batches(0, 0, cfg.train.batch_size))
    assert float(x.min()) < -1  # cifar100 statistics, not x / 255
    reference = build_model(trainer.teacher.cfg.model)
    reference.load_state_dict(weights)
    reference.train(False)
    with torch.no_grad():
        expected = hand_arcface(reference(F.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False)), y)
        student_view = hand_arcface(reference(F.interpolate((x * torch.tensor([0.2673, 0.2564, 0.2762]).view(1, 3, 1, 1)
                                                             + torch.tensor([0.5071, 0.4865, 0.4409]).view(1, 3, 1, 1)),
                                                            size=(48, 48), mode="bilinear", align_corners=False)), y)
    torch.testing.assert_close(teacher_out[0], expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(student_view, expected, atol=1e-2)  # what it was fed before: x / 255


# ---------------------------------------------------------------------------
# 5. the augment run's seeding (issue 24): the seed's DataLoader workers replay one parameter
# sequence, the same every epoch; data.augment_seeding: fixed_per_position does the same

BATCH, LOADER_WORKERS, STEPS = 8, 2, 6  # 48 images; worker 0 gets batches 0, 2, 4 and worker 1 gets 1, 3, 5
SAME_PLACE_IN_A_WORKER = {(a, b) for a in range(STEPS) for b in range(a + 1, STEPS)
                          if a // LOADER_WORKERS == b // LOADER_WORKERS}  # {(0, 1), (2, 3), (4, 5)}


def _one_batch_repeated() -> D.Dataset:
    """Every batch holds the same 8 images: two batches come out equal when they got the same augmentations."""
    base = D.synthetic_dataset(0, BATCH, 4)
    train = D.Split(images=np.tile(base.train.images, (STEPS, 1, 1, 1)), labels=np.tile(base.train.labels, STEPS))
    return D.Dataset(train=train, test=base.test, classes=base.classes, source="synthetic")


def _equal_pairs(batches: list[torch.Tensor]) -> set[tuple[int, int]]:
    return {(a, b) for a in range(len(batches)) for b in range(a + 1, len(batches)) if torch.equal(batches[a], batches[b])}


class _SeedAugDataset(torch.utils.data.Dataset):
    """The seed's CIFAR100AugDataset (dataset.py): DefaultImageAug(p=1) built once, in the main process;
    __getitem__ augments the HWC image (the seed's resize from 32 to 32 left out)."""

    def __init__(self, images_hwc: np.ndarray):
        import albumentations as A

        self.images = images_hwc
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.aug = A.OneOf([A.ShiftScaleRotate(), A.CoarseDropout(), A.ColorJitter(), A.HorizontalFlip(),
                                A.VerticalFlip()], p=1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: int) -> np.ndarray:
        return self.aug(image=self.images[idx])["image"]


def _pipeline(ds: D.Dataset, seeding: str, **kw) -> D.AlbumentationsPipeline:
    cfg = DataConfig(source="synthetic", augment="albumentations", shuffle=False, num_workers=0,
                     augment_seeding=seeding, augment_fixed_workers=LOADER_WORKERS)
    return D.make_pipeline(ds, cfg, "cpu", channels_last=False, **kw)


def test_the_seeds_workers_repeat_one_sequence_every_epoch_and_fixed_per_position_does_too():
    import cv2

    cv2.setNumThreads(0)  # OpenCV's thread pool must not be inherited by the forked workers
    ds = _one_batch_repeated()
    # the seed's own structure, run: shuffle off, non-persistent forked workers, two epochs
    seed_set = _SeedAugDataset(np.ascontiguousarray(ds.train.images.transpose(0, 2, 3, 1)))
    loader = torch.utils.data.DataLoader(seed_set, batch_size=BATCH, num_workers=LOADER_WORKERS, shuffle=False)
    seed_epochs = [list(loader) for _ in range(2)]
    assert not torch.equal(seed_epochs[0][0], torch.from_numpy(seed_set.images[:BATCH]))  # it does augment
    assert all(torch.equal(a, b) for a, b in zip(*seed_epochs))  # epoch 1 is epoch 0 again
    assert _equal_pairs(seed_epochs[0]) == SAME_PLACE_IN_A_WORKER  # the workers repeat each other

    fixed = _pipeline(ds, "fixed_per_position")
    ours = [[x for x, _ in fixed.train_batches(epoch, 0, BATCH)] for epoch in (0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(*ours))
    assert _equal_pairs(ours[0]) == SAME_PLACE_IN_A_WORKER
    other_seed = [x for x, _ in fixed.train_batches(0, 1, BATCH)]  # train.seed draws the values
    assert not any(torch.equal(a, b) for a, b in zip(ours[0], other_seed))
    rank1 = [x for x, _ in _pipeline(ds, "fixed_per_position", rank=1, world_size=2).train_batches(0, 0, BATCH)]
    assert all(torch.equal(a[1::2], b) for a, b in zip(ours[0], rank1))  # DDP: the ranks share the global batch

    fresh = _pipeline(ds, "per_epoch")
    drawn = [[x for x, _ in fresh.train_batches(epoch, 0, BATCH)] for epoch in (0, 1)]
    assert not any(torch.equal(a, b) for a, b in zip(*drawn))  # new augmentations every epoch
    assert _equal_pairs(drawn[0]) == set()  # and every image its own


def test_the_seeds_sixteen_workers_share_3250_parameter_sets():
    """Batch 250, 16 workers, 50000 images: 200 batches; workers 0-7 get 13, 8-15 get 12; position 250
    (batch 1) is worker 1's first image, 4000 (batch 16) worker 0's 251st."""
    from engine.data.seed_augment import worker_position

    assert [worker_position(p, 250, 16) for p in (0, 249, 250, 4000, 4253, 49999)] == [0, 249, 0, 250, 253, 3249]
    uses = Counter(worker_position(p, 250, 16) for p in range(50000))
    assert len(uses) == 3250 and set(uses[j] for j in range(3000)) == {16} and set(uses[j] for j in range(3000, 3250)) == {8}
    cfg = load_config("resnet18_augment", configs_dir=CONFIGS).data
    assert (cfg.augment_seeding, cfg.augment_fixed_workers) == ("fixed_per_position", 16)
    assert "fixed, distorted" in load_config("resnet18_augment", configs_dir=CONFIGS).reference.source
    fresh = load_config("resnet18_augment_fresh", configs_dir=CONFIGS)
    assert fresh.data.augment_seeding == "per_epoch" and fresh.reference.accuracy is None
    # apart from the seeding (and the name and words), the same experiment
    same = {k: v for k, v in cfg.model_dump().items() if not k.startswith("augment_seeding")}
    assert {k: v for k, v in fresh.data.model_dump().items() if not k.startswith("augment_seeding")} == same
    for section in ("model", "loss", "optim", "schedule", "train", "eval"):
        assert getattr(fresh, section) == getattr(load_config("resnet18_augment", configs_dir=CONFIGS), section)


def test_fixed_per_position_is_refused_off_the_albumentations_pipeline(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config("resnet18_baseline", ["data.augment_seeding=fixed_per_position"], CONFIGS)
    assert "data.augment_seeding" in str(err.value) and "needs data.augment: albumentations (got none)" in str(err.value)
    from typer.testing import CliRunner

    from cifar_tui.cli import app

    res = CliRunner().invoke(app, ["--home", str(tmp_path / "runs"), "--configs", str(CONFIGS), "show",
                                   "resnet18_cifar_sgd", "--set", "data.augment_seeding=fixed_per_position"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    (line,) = res.stderr.strip().splitlines()
    assert "data.augment_seeding" in line and "(got crop_flip)" in line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    # a run started before the key existed (its config.yaml lacks it) resumes as it started
    raw = load_config("resnet18_augment", configs_dir=CONFIGS).to_dict()
    del raw["data"]["augment_seeding"], raw["data"]["augment_fixed_workers"]
    assert config_from_dict(raw).data.augment_seeding == "per_epoch"


def test_reproduce_runs_the_fresh_augmentation_beside_the_seeds(tmp_path):
    """`cifar-tui reproduce` plans the seed's 11 and resnet18_augment_fresh right after resnet18_augment,
    so the claim "augmentation hurts" can be judged both ways; the report's table stays the seed's."""
    from typer.testing import CliRunner

    from cifar_tui.cli import app
    from cifar_tui.study_report import SEED_NAMES

    res = CliRunner().invoke(app, ["--home", str(tmp_path / "runs"), "--configs", str(CONFIGS), "reproduce",
                                   "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    planned = [json.loads(line)["config"] for line in res.stdout.splitlines()]
    at = SEED_NAMES.index("resnet18_augment") + 1
    assert planned == [*SEED_NAMES[:at], "resnet18_augment_fresh", *SEED_NAMES[at:]]
    assert "resnet18_augment_fresh" not in SEED_NAMES
