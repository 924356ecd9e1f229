"""Experiment configuration: YAML -> validated, frozen ExperimentConfig.

Every error is a ConfigError whose message names the file and the key path, so
the CLI can print it as one line and exit 2.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError  # noqa: F401 - engine.config.ConfigError is the name most code uses

MAX_CONFIG_BYTES = 1_000_000
MAX_YAML_DEPTH = 50        # our configs nest 3 levels; deeper is junk (and would recurse in the loaders)
MAX_YAML_NODES = 100_000   # after alias expansion: a "billion laughs" file is refused before it is built
CONFIG_SUFFIXES = (".yaml", ".yml")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, validate_default=True)


def _no_bool(value: Any) -> Any:
    # pydantic's lax mode reads true/false as 1/0: `epochs: yes` would silently mean one epoch.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


Num = BeforeValidator(_no_bool)  # every numeric field carries it
PosInt = Annotated[int, Num, Field(gt=0, le=1_000_000)]
NonNegInt = Annotated[int, Num, Field(ge=0, le=100_000_000)]
PosFloat = Annotated[float, Num, Field(gt=0, le=1e6, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Num, Field(ge=0, le=1e6, allow_inf_nan=False)]
Fraction = Annotated[float, Num, Field(ge=0, lt=1, allow_inf_nan=False)]
ImageSize = Annotated[int, Num, Field(ge=8, le=1024)]


REFERENCE_KINDS = ("seed", "paper", "estimate", "goal")  # the seed's write-up, a published figure, our estimate, our goal


class ReferenceConfig(_Strict):
    """The accuracy this config is held against, and what it is: `seed` (the seed's results table),
    `paper` (a published figure: a paper or a public repository's README), `estimate` (ours, from
    published figures) or `goal` (what we aim for: shown as a goal, never as a reference)."""

    accuracy: Optional[Annotated[float, Num, Field(ge=0, le=100, allow_inf_nan=False)]] = None
    kind: Optional[Literal["seed", "paper", "estimate", "goal"]] = None
    source: str = ""


# ---------------------------------------------------------------------------
# Recipes beyond the seed: batched augmentations (data.auto_augment, data.erasing,
# data.mixup), weight EMA (train.ema), SAM (optim.sam), the divergence guard
# (train.divergence), early stopping (train.early_stop), the compile mode.

Probability = Annotated[float, Num, Field(ge=0, le=1, allow_inf_nan=False)]
AreaFraction = Annotated[float, Num, Field(gt=0, le=1, allow_inf_nan=False)]
Alpha = Annotated[float, Num, Field(ge=0, le=100, allow_inf_nan=False)]


class AutoAugmentConfig(_Strict):
    """torchvision's RandAugment (num_ops ops at bin `magnitude`) or TrivialAugmentWide (one op,
    random bin), batched on the device (engine/data/auto_augment.py)."""
    policy: Literal["none", "randaugment", "trivialaugment"] = "none"
    num_ops: Annotated[int, Num, Field(ge=1, le=14)] = 2
    magnitude: Annotated[int, Num, Field(ge=0, le=99)] = 9
    num_magnitude_bins: Annotated[int, Num, Field(ge=2, le=100)] = 31

    @model_validator(mode="after")
    def _bins(self) -> "AutoAugmentConfig":
        if self.magnitude >= self.num_magnitude_bins:
            raise ValueError(f"magnitude {self.magnitude} must be below num_magnitude_bins ({self.num_magnitude_bins})")
        return self


class ErasingConfig(_Strict):
    """timm's RandomErasing (one box per image) on the normalised batch (engine/data/erasing.py)."""
    p: Probability = 0.0
    mode: Literal["const", "rand", "pixel"] = "const"
    min_area: AreaFraction = 0.02
    max_area: AreaFraction = 1 / 3
    min_aspect: Annotated[float, Num, Field(gt=0, le=100, allow_inf_nan=False)] = 0.3
    max_aspect: Optional[Annotated[float, Num, Field(gt=0, le=100, allow_inf_nan=False)]] = None  # None: 1 / min_aspect

    @model_validator(mode="after")
    def _ranges(self) -> "ErasingConfig":
        if self.min_area > self.max_area:
            raise ValueError(f"min_area {self.min_area} is larger than max_area ({self.max_area})")
        if self.max_aspect is not None and self.min_aspect > self.max_aspect:
            raise ValueError(f"min_aspect {self.min_aspect} is larger than max_aspect ({self.max_aspect})")
        return self


class MixupConfig(_Strict):
    """timm's Mixup: MixUp and/or CutMix with soft targets (engine/data/mixing.py); on when an alpha is > 0."""
    mixup_alpha: Alpha = 0.0
    cutmix_alpha: Alpha = 0.0
    prob: Probability = 1.0
    switch_prob: Probability = 0.5
    mode: Literal["elem", "batch"] = "elem"   # parameters per image, or one set per batch (timm's default)
    correct_lam: bool = True

    @property
    def enabled(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.prob > 0


class EmaConfig(_Strict):
    """An exponential moving average of the weights (timm's ModelEmaV3), evaluated beside the model."""
    decay: Annotated[float, Num, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.9998
    warmup: bool = True          # timm's use_warmup: the decay ramps up over the first steps
    every: PosInt = 1            # update every N optimizer steps


class SamConfig(_Strict):
    """Sharpness-Aware Minimization around the optimizer (engine/sam.py); adaptive: ASAM."""
    rho: PosFloat = 0.05
    adaptive: bool = False


class DivergenceConfig(_Strict):
    """Ends a run whose loss is NaN/inf or above max_loss_ratio x the loss of a uniform guess."""
    enabled: bool = True
    max_loss_ratio: Annotated[float, Num, Field(gt=1, le=1e6, allow_inf_nan=False)] = 10.0


class EarlyStopConfig(_Strict):
    """Ends a run as completed when test accuracy has not improved by min_delta for `patience` evaluations."""
    patience: PosInt
    min_delta: Annotated[float, Num, Field(ge=0, le=100, allow_inf_nan=False)] = 0.0


CompileMode = Literal["auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


class DataConfig(_Strict):
    source: Literal["cifar100", "synthetic"] = "cifar100"
    root: Optional[str] = None  # None: --data-root / CIFAR_TUI_DATA / ./data
    image_size: ImageSize = 32
    # Multi-scale training (the seed's mst): each training image is resized to one of these
    # sizes, drawn per image; each step runs one forward per size group, smallest first, and
    # one loss over all of them. Evaluation uses image_size. Empty: single scale.
    train_sizes: list[ImageSize] = []
    # none | flip | crop_flip run batched on the device; albumentations is the
    # seed's per-image CPU recipe, run in DataLoader workers.
    augment: Literal["none", "flip", "crop_flip", "albumentations"] = "none"
    augment_p: Annotated[float, Num, Field(ge=0, le=1)] = 1.0
    # How the albumentations recipe draws its parameters (engine/data/seed_augment.py).
    # per_epoch: afresh for every image in every epoch, from (seed, epoch, index).
    # fixed_per_position: as the seed's code did: its DataLoader forks `augment_fixed_workers`
    # workers every epoch from a transform never called, so worker w (batches w, w+N, ...)
    # replays one parameter sequence: the same augmentation at a position every epoch, the
    # same in each worker. The default is what runs started before this key existed did.
    augment_seeding: Literal["per_epoch", "fixed_per_position"] = "per_epoch"
    augment_fixed_workers: Annotated[int, Num, Field(ge=1, le=256)] = 16  # the seed's; not our num_workers
    crop_padding: Annotated[int, Num, Field(ge=0, le=64)] = 4
    normalize: Literal["none", "cifar100", "imagenet"] = "none"
    shuffle: bool = True
    train_limit: NonNegInt = 0
    test_limit: NonNegInt = 0
    num_workers: Annotated[int, Num, Field(ge=-1, le=256)] = -1  # albumentations path; -1 = one per core
    # batched on the device (engine/data/device_augment.py); off by default
    auto_augment: AutoAugmentConfig = AutoAugmentConfig()
    erasing: ErasingConfig = ErasingConfig()
    mixup: MixupConfig = MixupConfig()


class ModelConfig(_Strict):
    backbone: Annotated[str, Field(min_length=1, max_length=128)] = "resnet18"
    stem: Literal["imagenet", "cifar"] = "imagenet"
    pretrained: bool = False
    weights: Optional[str] = None  # local weights file (offline pretrained)
    head: Literal["linear", "margin"] = "linear"
    hid_dim: PosInt = 512
    num_classes: Annotated[int, Num, Field(ge=2, le=100_000)] = 100
    drop_rate: Fraction = 0.0
    drop_path_rate: Fraction = 0.0  # stochastic depth of timm backbones (ViT, ConvNeXt, ResNet)


class KDConfig(_Strict):
    teacher: Annotated[str, Field(min_length=1, max_length=256)]  # config name or run id of a finished run
    temperature: PosFloat = 4.0
    alpha: Annotated[float, Num, Field(ge=0, le=1)] = 0.7
    # eval: the teacher normalises with its BatchNorm running statistics. train: it runs in
    # training mode as in the seed (Lightning never switches the frozen teacher to evaluation mode), so
    # BatchNorm uses each batch's statistics; its running statistics are left untouched.
    teacher_mode: Literal["eval", "train"] = "eval"


class LossConfig(_Strict):
    label_smoothing: Fraction = 0.0
    margin: Literal["none", "arcface", "cosface"] = "none"
    s: PosFloat = 8.0
    m: Annotated[float, Num, Field(ge=0, le=1.5, allow_inf_nan=False)] = 0.35
    kd: Optional[KDConfig] = None


class OptimConfig(_Strict):
    name: Literal["adamw", "sgd"] = "adamw"
    lr: PosFloat = 1e-3
    betas: tuple[Fraction, Fraction] = (0.9, 0.999)
    weight_decay: NonNegFloat = 1e-3
    momentum: Fraction = 0.9
    nesterov: bool = False
    # Parameters that get weight decay 0 (engine/optim.py): none (every parameter decays),
    # bias (Otter's rule, the seed's: names containing "bias"), bias_norm (timm's rule: biases
    # and normalisation weights, i.e. 1-D tensors).
    no_decay: Literal["none", "bias", "bias_norm"] = "none"
    sam: Optional[SamConfig] = None


class ScheduleConfig(_Strict):
    name: Literal["constant", "step", "multistep", "cosine", "onecycle"] = "constant"
    # milestones/step_size count optimizer steps when interval == step, epochs otherwise
    interval: Literal["step", "epoch"] = "epoch"
    milestones: list[NonNegInt] = []
    step_size: PosInt = 30
    gamma: Annotated[float, Num, Field(gt=0, le=1)] = 0.1
    warmup_epochs: Annotated[float, Num, Field(ge=0, le=10_000)] = 0.0
    min_lr: NonNegFloat = 0.0


class TrainConfig(_Strict):
    epochs: Annotated[int, Num, Field(gt=0, le=100_000)] = 200
    batch_size: Annotated[int, Num, Field(gt=0, le=65_536)] = 250
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "fp32"
    grad_clip: Optional[PosFloat] = None
    seed: Annotated[int, Num, Field(ge=0, le=2**31 - 1)] = 0
    device: Annotated[str, Field(pattern=r"^(auto|cpu|cuda|cuda:\d{1,2}|mps)$")] = "auto"
    channels_last: bool = True
    compile: bool = False
    compile_mode: CompileMode = "auto"  # auto: reduce-overhead on one GPU, no CUDA graphs under DDP
    sync_bn: bool = False  # DDP: synchronised BatchNorm across ranks
    checkpoint_every: PosInt = 1  # epochs
    # What a completed run keeps in checkpoints/ (engine/keep.py): best = best.pt (weights only);
    # best+last = also last.pt (resume state, so `resume --epochs` can extend it); all = also
    # the weights of every checkpointed epoch. A stopped, failed or crashed run keeps last.pt always.
    keep: Literal["best", "best+last", "all"] = "best"
    ema: Optional[EmaConfig] = None
    divergence: DivergenceConfig = DivergenceConfig()
    early_stop: Optional[EarlyStopConfig] = None


class EvalConfig(_Strict):
    every: PosInt = 1  # epochs
    batch_size: Optional[Annotated[int, Num, Field(gt=0, le=65_536)]] = None


class ExperimentConfig(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=100)]
    description: str = ""
    reference: ReferenceConfig = ReferenceConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "ExperimentConfig":
        if not _PLAIN_NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} must be a plain file name (letters, digits, _ . -)")
        if self.loss.margin != "none" and self.model.head != "margin":
            raise ValueError(f"loss.margin: {self.loss.margin} needs model.head: margin (cosine logits), got {self.model.head}")
        if self.model.head == "margin" and self.loss.margin == "none":
            raise ValueError("model.head: margin needs loss.margin: arcface or cosface")
        if self.model.weights is not None and not self.model.pretrained:
            raise ValueError("model.weights: a weights file needs model.pretrained: true")
        if len(set(self.data.train_sizes)) != len(self.data.train_sizes):
            raise ValueError(f"data.train_sizes: each size once, got {self.data.train_sizes}")
        if self.data.augment == "albumentations" and self.data.train_sizes:
            raise ValueError("data.train_sizes: multi-scale is not available with augment: albumentations")
        if self.data.augment_seeding != "per_epoch" and self.data.augment != "albumentations":
            raise ValueError(f"data.augment_seeding: {self.data.augment_seeding} reproduces the seed's albumentations "
                             f"DataLoader workers; it needs data.augment: albumentations (got {self.data.augment})")
        if self.schedule.name == "multistep" and not self.schedule.milestones:
            raise ValueError("schedule.milestones: multistep needs at least one milestone")
        self._check_batched_augment()
        return self

    def _check_batched_augment(self) -> None:
        data = self.data
        on = [name for name, enabled in (("auto_augment", data.auto_augment.policy != "none"),
                                         ("erasing", data.erasing.p > 0), ("mixup", data.mixup.enabled)) if enabled]
        if on and data.augment == "albumentations":
            raise ValueError(f"data.{on[0]}: runs in the device pipeline, not with augment: albumentations")
        if data.mixup.enabled and self.loss.margin != "none":
            raise ValueError(f"data.mixup: needs one class per image, not loss.margin: {self.loss.margin}")
        if on and self.data.train_sizes:
            raise ValueError(f"data.{on[0]}: runs on single-size batches; not combined with data.train_sizes (multi-scale)")

    @property
    def is_synthetic(self) -> bool:
        return self.data.source == "synthetic"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------
# Loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, "found a list or mapping used as a key", key_node.start_mark) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _check_nesting(text: str) -> None:
    # PyYAML's composer and constructor recurse once per level: "[[[[..." 1000 deep would
    # end in a RecursionError. The event parser does not recurse, so measure depth with it first.
    depth = 0
    for event in yaml.parse(text, Loader=_UniqueKeyLoader):
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep")
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


def _check_expansion(root: yaml.Node) -> None:
    # Aliases re-use nodes, so a tiny file can expand exponentially ("billion laughs"),
    # nest deeper than its text does, or refer to itself (&a [*a]). Walk the expanded
    # graph iteratively with a budget before constructing anything.
    budget = MAX_YAML_NODES
    stack: list[tuple[yaml.Node, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(f"more than {MAX_YAML_NODES} YAML nodes after alias expansion (alias bomb or recursive alias)")
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"YAML nested more than {MAX_YAML_DEPTH} levels deep after alias expansion")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))


def parse_yaml_text(text: str, origin: str) -> Any:
    """Safe-load one YAML document (no Python tags, no duplicate keys, bounded size and depth)."""
    try:
        _check_nesting(text)
        loader = _UniqueKeyLoader(text)  # a SafeLoader: !!python/... tags are errors
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_expansion(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    except RecursionError:  # a last guard; the checks above should make it unreachable
        raise ConfigError(f"{origin}: YAML nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context = getattr(exc, "context", None)
        if context and problem.startswith("but "):  # "expected a single document ..., but found another document"
            problem = f"{context}, {problem}"
        raise ConfigError(f"{origin}: invalid YAML{where}: {problem}") from None


def _format_validation_error(origin: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(p) for p in err["loc"] if p != "__root__")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
            parts.append(msg if not loc else f"{loc}: {msg}")
            continue
        got = err.get("input")
        got_s = "" if err["type"] in ("missing",) or isinstance(got, dict) else f" (got {_short(got)})"
        parts.append(f"{loc or '(top level)'}: {msg}{got_s}")
    more = f" (+{len(exc.errors()) - 3} more)" if len(exc.errors()) > 3 else ""
    return f"{origin}: " + "; ".join(parts) + more


def _short(value: Any) -> str:
    s = repr(value)
    return s if len(s) <= 40 else s[:37] + "..."


def validate_config(raw: Any, origin: str) -> ExperimentConfig:
    if not isinstance(raw, dict):
        kind = "empty" if raw is None else type(raw).__name__
        raise ConfigError(f"{origin}: expected a YAML mapping with a 'name' key, got {kind}")
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(origin, exc)) from None


# ---------------------------------------------------------------------------
# Overrides: --set a.b=v


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. train.epochs=5")
    key, _, value = item.partition("=")
    path = key.strip().split(".")
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in path):
        raise ConfigError(f"--set {item!r}: key {key!r} must be dotted names like optim.lr")
    parsed = parse_yaml_text(value, f"--set {key}") if value.strip() else ""
    return path, parsed


def apply_overrides(raw: dict, overrides: list[str], origin: str | None = None) -> dict:
    """Set each KEY.PATH=VALUE in a copy of raw; `origin` (the file) is named when the file is what stands in the way."""
    return apply_parsed(raw, [(item, *parse_override(item)) for item in overrides], origin)


def apply_parsed(raw: dict, parsed: list[tuple[str, list[str], Any]], origin: str | None = None) -> dict:
    """apply_overrides with each override already parsed: (text, key path, value). A sweep parses
    each value once and applies it to many grid points."""
    raw = copy.deepcopy(raw)
    for item, path, value in parsed:
        value = copy.deepcopy(value)  # a parsed list is shared by the grid points
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
                node[part] = child
            if not isinstance(child, dict):
                where = f" in {origin}" if origin else ""
                raise ConfigError(f"--set {item!r}: {'.'.join(path[:i + 1])} is not a section{where} (it is {_short(child)})")
            node = child
        node[path[-1]] = value
    return raw


# ---------------------------------------------------------------------------
# Finding configs by name


def default_configs_dir() -> Path:
    env = os.environ.get("CIFAR_TUI_CONFIGS")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "configs"
    if checkout.is_dir():
        return checkout
    # non-editable install: configs ship inside the wheel as cifar_tui/configs
    import importlib.util

    spec = importlib.util.find_spec("cifar_tui")
    if spec and spec.origin:
        return Path(spec.origin).parent / "configs"
    return checkout


def check_plain_name(name: str, what: str) -> str:
    if not name or "\x00" in name or "/" in name or "\\" in name or name in (".", "..") or not _PLAIN_NAME.match(name):
        raise ConfigError(f"{what} {name!r}: expected a plain name (letters, digits, _ . -), not a path")
    return name


def list_config_paths(configs_dir: Path | None = None) -> list[Path]:
    d = configs_dir or default_configs_dir()
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix in CONFIG_SUFFIXES and p.is_file())


def resolve_config_path(name_or_path: str, configs_dir: Path | None = None) -> Path:
    if "\x00" in name_or_path:
        raise ConfigError("config name contains a NUL character")
    if name_or_path.endswith(CONFIG_SUFFIXES) or os.sep in name_or_path:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"{name_or_path}: config file not found")
        return path
    d = configs_dir or default_configs_dir()
    check_plain_name(name_or_path, "config")
    for suffix in CONFIG_SUFFIXES:
        p = d / f"{name_or_path}{suffix}"
        if p.is_file():
            return p
    raise ConfigError(f"unknown experiment {name_or_path!r} (not in {d}); "
                      f"{suggest(name_or_path, [p.stem for p in list_config_paths(d)])}")


def suggest(name: str, known: list[str]) -> str:
    """`did you mean X?` for a mistyped name (difflib), else what there is."""
    import difflib

    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}?"
    if not known:
        return "there are no experiments"
    return f"known: {', '.join(known[:20])}" + (f" and {len(known) - 20} more" if len(known) > 20 else "")


def read_config_file(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: config file is {size} bytes, more than the {MAX_CONFIG_BYTES} allowed")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file (binary data?)") from None
    if "\x00" in text:
        raise ConfigError(f"{path}: not a text file (contains NUL bytes)")
    return parse_yaml_text(text, str(path))


def load_config(name_or_path: str, overrides: list[str] | None = None, configs_dir: Path | None = None) -> ExperimentConfig:
    path = resolve_config_path(name_or_path, configs_dir)
    raw = read_config_file(path)
    if overrides:
        if not isinstance(raw, dict):
            validate_config(raw, str(path))
        raw = apply_overrides(raw, overrides, str(path))
        return validate_config(raw, f"{path} (with --set)")
    return validate_config(raw, str(path))


def config_from_dict(raw: dict, origin: str = "config") -> ExperimentConfig:
    return validate_config(raw, origin)
