"""The names of groups, in one place: the CLI, the TUI (leaderboard, study tab, compare, launch
form), the report and its figures all call `name_groups`.

A group is recorded as its full key (`sweep.group_key`: `config key=value ...`, values canonical
and at full precision; `config #digest` for an older run that recorded none; a tune trial adds
`trial=N`). Among the groups listed together (a study, a leaderboard) a group is named by what
sets it apart: the keys whose values differ between them, each as `lr=1e-3` (the last part of the
key, a few common ones shorter; numbers to three significant digits, more only where two groups
would read the same); a tune trial as `#N` plus its values. What every group shares is said once,
in the title. The full keys stay in JSON and CSV.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

TRIAL_KEY = "trial"          # a tune trial's number, in its group key (never a config key: those have a dot)
DIGITS = 3                   # significant digits in labels
LONG_TEXT = 24               # a longer text value is cut (its end kept) unless two groups would then read the same
NO_DIFFERENCE = "(defaults)"  # a group with none of the differing keys set: the config as it is
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_ITEM = re.compile(r'\S+?=(?:"(?:[^"\\]|\\.)*"|\S*)|\S+')
# a few keys everyone shortens; any other key is named by its last part
SHORT_KEYS = {"optim.lr": "lr", "optim.weight_decay": "wd", "loss.label_smoothing": "smoothing",
              "train.batch_size": "batch", "data.image_size": "size", "data.source": "data"}


# ---------------------------------------------------------------- values


def short_number(x: float, digits: int = DIGITS) -> str:
    """1e-3, 3e-3, 0.05, 0.1, 200, 1.23e6: `digits` significant digits, exponents for the very
    small and very large."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    if float(x).is_integer() and abs(x) < 10 ** max(digits, 6):
        return str(int(x))
    exp = math.floor(math.log10(abs(x)))
    mantissa = round(x / 10 ** exp, digits - 1)
    if abs(mantissa) >= 10:
        mantissa, exp = mantissa / 10, exp + 1
    if -2 <= exp < 4:
        places = digits - 1 - exp
        text = f"{round(x, places):.{max(0, places)}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return f"{mantissa:.{digits - 1}f}".rstrip("0").rstrip(".") + f"e{exp}"


def _split_top(text: str) -> list[str]:
    parts, depth, current, quote = [], 0, [], False
    for ch in text:
        if ch == '"':
            quote = not quote
        elif not quote and ch in "[{":
            depth += 1
        elif not quote and ch in "]}":
            depth -= 1
        elif not quote and ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def short_value(text: str, digits: int = DIGITS, long_text: int | None = LONG_TEXT) -> str:
    """A canonical value (`sweep.canonical`'s text) in short form: numbers to `digits`
    significant digits, inside lists too; a long text cut to its last `long_text` characters."""
    if _NUMBER.match(text):
        return short_number(float(text), digits)
    if len(text) >= 2 and text[0] == "[" and text[-1] == "]":
        return "[" + ",".join(short_value(p, digits, long_text) for p in _split_top(text[1:-1])) + "]"
    if text.startswith('"'):
        try:
            text = json.loads(text)
        except ValueError:
            pass
    if long_text is not None and len(text) > long_text:
        return "…" + text[-(long_text - 1):]
    return text


def short_settings(values: dict) -> str:
    """`lr=6e-3 wd=1e-4` for {key: value} (a tune trial's params): short keys and values."""
    names = _key_names(values)
    return " ".join(f"{names[k]}={short_number(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v}"
                    for k, v in values.items())


# ---------------------------------------------------------------- one group


@dataclass(frozen=True)
class ParsedGroup:
    config: str
    items: dict[str, str] = field(default_factory=dict)   # key -> canonical value (full precision)
    trial: int | None = None
    tag: str | None = None                                # `#digest` of a run that recorded no group


def parse_group(group: str, config: str | None = None) -> ParsedGroup:
    """A group key back into its config, its settings, its trial number."""
    if config and group.startswith(config + " "):
        rest = group[len(config) + 1:]
    elif config and group == config:
        rest = ""
    else:
        config, _, rest = group.partition(" ")
    items, trial, tag = {}, None, None
    for token in _ITEM.findall(rest):
        key, eq, value = token.partition("=")
        if not eq:
            tag = token
        elif key == TRIAL_KEY and value.isdigit():
            trial = int(value)
        else:
            items[key] = value
    return ParsedGroup(config or "?", items, trial, tag)


def settings(group: str, config: str | None = None) -> dict[str, str]:
    """A group's settings at full precision (JSON, CSV)."""
    return dict(parse_group(group, config).items)


# ---------------------------------------------------------------- groups listed together


@dataclass
class Names:
    """Short names of groups listed together: `labels[group]`, and what they all share (`title`)."""

    labels: dict[str, str]
    shared: list[str]            # `key=value` items every group has (short form)
    config: str | None           # the one config of every group (None: several)

    def __getitem__(self, group: str) -> str:
        return self.labels.get(group, group)

    @property
    def title(self) -> str:
        """What every group shares: `resnet18_baseline · epochs=3 data=synthetic`."""
        return " · ".join(p for p in (self.config or "", " ".join(self.shared)) if p)


def _key_names(keys: Iterable[str]) -> dict[str, str]:
    """Each key's short name (`lr`, `wd`, the last part), the whole key where two would read the same."""
    keys = list(keys)
    leaf = {k: k.rsplit(".", 1)[-1] for k in keys}
    short = {k: SHORT_KEYS.get(k, leaf[k]) for k in keys}
    taken: dict[str, int] = {}
    for name in [*leaf.values(), *{n for k, n in short.items() if n != leaf[k]}]:
        taken[name] = taken.get(name, 0) + 1
    return {k: short[k] if taken[leaf[k]] == 1 and taken[short[k]] == 1 else k for k in keys}


def name_groups(groups: Iterable[str], configs: dict[str, str] | None = None) -> Names:
    """Names for these groups (`configs`: group -> its config name, where known). The same groups
    get the same Names object again (a study's tab names its groups each time a run moves): do
    not change it."""
    keys = tuple(dict.fromkeys(groups))
    return _name_groups(keys, tuple((g, (configs or {}).get(g)) for g in keys))


@lru_cache(maxsize=64)
def _name_groups(keys_in_order: tuple[str, ...], configs_of: tuple) -> Names:
    configs = {g: c for g, c in configs_of if c}
    keys_in_order = list(keys_in_order)
    parsed = {g: parse_group(g, configs.get(g)) for g in keys_in_order}
    all_configs = list(dict.fromkeys(p.config for p in parsed.values()))
    one_config = all_configs[0] if len(all_configs) == 1 else None
    keys = sorted({k for p in parsed.values() for k in p.items})
    differ = [k for k in keys if len(keys_in_order) > 1 and
              len({p.items.get(k) for p in parsed.values()}) > 1]
    same = [k for k in keys if k not in differ]
    names = _key_names(keys)
    # one group alone: its settings are its name; the config is the title
    shared = [f"{names[k]}={short_value(next(iter(parsed.values())).items[k])}" for k in same] \
        if len(keys_in_order) > 1 else []
    own = same if len(keys_in_order) == 1 else differ

    def label(p: ParsedGroup, digits: int, long_text: int | None) -> str:
        parts = [] if one_config else [p.config]
        if p.trial is not None:
            parts.append(f"#{p.trial}")
        parts += [f"{names[k]}={short_value(p.items[k], digits, long_text)}" for k in own if k in p.items]
        if p.tag:
            parts.append(p.tag)
        return " ".join(parts) or NO_DIFFERENCE

    labels = {g: label(p, DIGITS, LONG_TEXT) for g, p in parsed.items()}
    digits, long_text = DIGITS, LONG_TEXT
    while True:  # two different groups never read the same: more digits where they would
        seen: dict[str, list[str]] = {}
        for g, text in labels.items():
            seen.setdefault(text, []).append(g)
        clashes = [gs for gs in seen.values() if len(gs) > 1]
        if not clashes or digits >= 17:
            break
        digits, long_text = digits + 1, None
        for gs in clashes:
            for g in gs:
                labels[g] = label(parsed[g], digits, long_text)
    return Names(labels, shared, one_config)
