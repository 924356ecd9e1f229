"""Sweeps: `--set KEY=a,b` lists times `--seeds N`, expanded into a plan of runs, each with its group.

A value with top-level commas is a list of values to sweep; commas inside brackets, braces or
quotes are part of one value (`data.train_sizes=[32,64]` is one value, `[32,64],[32]` two).
The plan is the grid (the product of the lists, in the order given, the last varying fastest)
for each config name, repeated for each seed, seeds outermost: a study stopped part-way has
every group with the same number of seeds.

A run's group is its config name plus its overrides, canonical (sorted by key, values parsed,
so `1e-3` and `0.001` are one group) with the seed (and where it runs: train.device, data.root)
left out. Plain, fast functions (a 1,000-run plan in well under a second), no torch.
"""
from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from engine.config import (ConfigError, ExperimentConfig, apply_parsed, check_plain_name, parse_override,
                           read_config_file, resolve_config_path, validate_config)

SEED_KEY = "train.seed"
GROUP_EXCLUDED = (SEED_KEY, "train.device", "data.root")   # where and with which seed: not what is compared
MAX_PLAN = 100_000
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


# ---------------------------------------------------------------- values and groups


def split_list(item: str) -> list[str]:
    """The values of one `--set KEY=v1,v2,...` (one value: a list of one). ConfigError when malformed."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. optim.lr=1e-3 (or a list: optim.lr=1e-3,3e-3)")
    key, _, text = item.partition("=")
    parts, current, depth, quote, escaped = [], [], 0, None, False
    for ch in text:
        if quote:
            current.append(ch)
            if escaped:
                escaped = False
            elif ch == "\\" and quote == '"':
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                if not parts:  # no list here: one value, which YAML judges (and names what is wrong)
                    return [item]
                raise ConfigError(f"--set {item!r}: a closing {ch!r} without its opening bracket")
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if (quote or depth) and not parts:
        return [item]  # no list here: one value, which YAML judges (and names what is wrong)
    if quote:
        raise ConfigError(f"--set {item!r}: a quote ({quote}) is not closed")
    if depth:
        raise ConfigError(f"--set {item!r}: a bracket is not closed (a list value is written [a,b])")
    parts.append("".join(current).strip())
    if len(parts) > 1 and any(p == "" for p in parts):
        raise ConfigError(f"--set {item!r}: an empty value in the list (two commas in a row, or one at an end?)")
    return [f"{key.strip()}={p}" for p in parts]


def is_study(sets: Sequence[str], seeds: int = 1, study: str | None = None) -> bool:
    """Whether `--set` items, a seed count and a study name ask for a study (a plan of runs
    with their groups) rather than one plain run: a list in a value, several seeds, or a name.
    A malformed list counts as one: the planner then says what is wrong with it."""
    try:
        lists = any(len(split_list(o)) > 1 for o in sets)
    except ConfigError:
        lists = True
    return lists or seeds > 1 or bool(study)


def canonical(value: Any) -> str:
    """One text per value: numbers as numbers (YAML reads 1e-3 as a string), 1.0 as 1, lists as [a,b]."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{canonical(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return text if text and re.fullmatch(r"[A-Za-z0-9_./+:@-]+", text) else json.dumps(text)


class _Parsed:
    """parse_override, once per distinct text (a grid re-uses its values many times)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[list[str], Any]] = {}

    def __call__(self, item: str) -> tuple[list[str], Any]:
        found = self._cache.get(item)
        if found is None:
            found = self._cache[item] = parse_override(item)
        return found


_parse = _Parsed()


def group_key(config_name: str, overrides: Iterable[str], exclude: Sequence[str] = GROUP_EXCLUDED) -> str:
    """`config key=value ...`: the config plus its overrides (last one per key wins), canonical,
    sorted by key, with the seed (and train.device, data.root) left out."""
    values: dict[str, Any] = {}
    for item in overrides:
        path, value = _parse(item)
        values[".".join(path)] = value
    parts = [f"{k}={canonical(v)}" for k, v in sorted(values.items()) if k not in exclude]
    return " ".join([config_name, *parts])


def override_key(item: str) -> str:
    return item.partition("=")[0].strip()


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Axis:
    key: str
    values: tuple[str, ...]  # whole overrides, KEY=value, one per grid value


@dataclass(frozen=True)
class PlannedRun:
    index: int                   # 1-based place in the plan
    config: str                  # the NAME (or YAML path) as given: what the supervisor loads
    config_name: str             # the config's `name`
    overrides: tuple[str, ...]
    seed: int                    # the train.seed it runs with
    group: str
    cfg: ExperimentConfig = field(compare=False, repr=False)


@dataclass
class Plan:
    study: str
    runs: list[PlannedRun]
    axes: list[Axis]
    seeds: int
    names: list[str]

    def groups(self) -> list[str]:
        return list(dict.fromkeys(r.group for r in self.runs))

    def describe(self) -> str:
        shape = [f"{len(a.values)} {a.key}" for a in self.axes]
        if len(self.names) > 1:
            shape.insert(0, f"{len(self.names)} configs")
        if self.seeds > 1:
            shape.append(f"{self.seeds} seeds")
        n = len(self.runs)
        return (f"{n} run{'s' if n != 1 else ''}" + (f" ({' x '.join(shape)})" if shape else "")
                + f", {len(self.groups())} group{'s' if len(self.groups()) != 1 else ''}")


def study_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def default_study_name(names: Sequence[str]) -> str:
    """The config's name and the time (several configs: sweep and the time)."""
    base = names[0].rsplit("/", 1)[-1].removesuffix(".yaml").removesuffix(".yml") if len(names) == 1 else "sweep"
    return check_plain_name(f"{base}-{study_stamp()}", "--study")


def parse_sets(sets: Sequence[str], extra: Sequence[str] = ()) -> tuple[list[str], list[Axis]]:
    """(fixed overrides, swept axes) from the --set items, then the extra ones (--data, --epochs...).

    Refused with one line: a malformed list, a value listed twice in one list, a swept key also
    set elsewhere."""
    fixed: list[str] = []
    axes: list[Axis] = []
    for item in sets:
        values = split_list(item)
        if len(values) == 1:
            fixed.append(values[0])
            continue
        seen: dict[str, str] = {}
        for v in values:
            path, parsed = _parse(v)  # every value checked now (bad YAML names its key)
            text = canonical(parsed)
            if text in seen:
                first, again = seen[text].partition("=")[2], v.partition("=")[2]
                also = "" if first == again else f" (as {first!r} and {again!r})"
                raise ConfigError(f"--set {item!r}: the value {text} is listed twice{also}; each value once")
            seen[text] = v
        axes.append(Axis(override_key(item), tuple(values)))
    for item in extra:
        fixed.append(item)
    for item in fixed:
        _parse(item)
    swept = [a.key for a in axes]
    for key in swept:
        if swept.count(key) > 1:
            raise ConfigError(f"--set {key}: swept twice; give its values in one list ({key}=a,b,c)")
        for item in fixed:
            if override_key(item) == key:
                raise ConfigError(f"--set {key}: swept and also set to one value ({item}); keep one of them")
    return fixed, axes


def make_plan(names: Sequence[str], sets: Sequence[str], seeds: int = 1, *, extra: Sequence[str] = (),
              configs_dir=None, study: str | None = None) -> Plan:
    """Expand names x grid x seeds into validated runs. ConfigError (one line) on bad input."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: expected at least 1 (or auto)")
    fixed, axes = parse_sets(sets, extra)
    if seeds > 1 and any(a.key == SEED_KEY for a in axes):
        raise ConfigError(f"--seeds {seeds} and a list of {SEED_KEY}: give the seeds one way")
    size = len(names) * seeds
    for a in axes:
        size *= len(a.values)
    if size > MAX_PLAN:
        raise ConfigError(f"the plan has {size} runs, more than the {MAX_PLAN} allowed; sweep fewer values")
    study = check_plain_name(study, "--study") if study else default_study_name(names)
    bases: dict[str, tuple[dict, str]] = {}
    for name in names:
        path = resolve_config_path(name, configs_dir)
        bases[name] = (read_config_file(path), str(path))
    grid = list(itertools.product(*[a.values for a in axes]))
    points: dict[tuple[str, tuple[str, ...]], ExperimentConfig] = {}
    for name in names:
        raw, origin = bases[name]
        if not isinstance(raw, dict):
            validate_config(raw, origin)
        for combo in grid:
            overrides = [*fixed, *combo]
            parsed = [(o, *_parse(o)) for o in overrides]
            points[(name, combo)] = validate_config(apply_parsed(raw, parsed, origin), f"{origin} (with --set)")
    runs: list[PlannedRun] = []
    for replicate in range(seeds):
        for name in names:
            for combo in grid:
                cfg = points[(name, combo)]
                overrides = [*fixed, *combo]
                seed = cfg.train.seed
                if seeds > 1:  # this run's seed replaces a fixed one (the base the seeds count from)
                    seed = cfg.train.seed + replicate
                    if seed > 2**31 - 1:
                        raise ConfigError(f"--seeds {seeds}: train.seed {seed} is out of range (at most 2147483647)")
                    overrides = [o for o in overrides if override_key(o) != SEED_KEY] + [f"{SEED_KEY}={seed}"]
                    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"seed": seed})})
                runs.append(PlannedRun(len(runs) + 1, name, cfg.name, tuple(overrides), seed,
                                       group_key(cfg.name, overrides), cfg))
    return Plan(study, runs, axes, seeds, list(names))


def plan_lines(plan: Plan, notes: dict[int, str] | None = None) -> list[str]:
    """The plan as text lines: a header (what every group shares said once), then one line per run,
    its group by its short name (cifar_tui.names; notes: index -> what exists already)."""
    from .names import name_groups

    notes = notes or {}
    width = len(str(len(plan.runs)))
    configs = {r.group: r.config_name for r in plan.runs}
    names = name_groups(configs, configs)
    lines = [f"study {plan.study}: {plan.describe()}" + (f" · every group: {names.title}" if names.title else ""),
             f"  {'#':>{width}}  {'seed':>6}  group"]
    for r in plan.runs:
        note = f"  ({notes[r.index]})" if r.index in notes else ""
        lines.append(f"  {r.index:>{width}}  {r.seed:>6}  {names[r.group]}{note}")
    return lines
