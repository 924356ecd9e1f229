"""What a benchmark run measures and how long (BenchPlan), and the goals it is judged by."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

REQUIRED_KEYS = ("device", "pipeline_ratio_32", "pipeline_ratio_224", "train_vs_ceiling_32", "train_img_per_s_32",
                 "tui_vs_headless", "help_s", "list_s", "tui_first_screen_s")

# (key, label, comparison, goal); ">=" goals are ratios, "<=" goals are seconds.
GOALS_CPU: list[tuple[str, str, str, float]] = [
    ("pipeline_ratio_32", "data pipeline vs seed-style loader, 32x32", ">=", 5.0),
    ("pipeline_ratio_224", "data pipeline vs seed-style loader, 224x224", ">=", 2.0),
    ("train_vs_ceiling_32", "resnet18 training vs model-only ceiling, 32x32", ">=", 0.95),
    ("train_vs_ceiling_224", "resnet18 training vs model-only ceiling, 224x224", ">=", 0.95),
    ("tui_vs_headless", "training with the TUI attached vs headless", ">=", 0.98),
    ("help_s", "`cifar-tui --help` wall time (s)", "<=", 0.5),
    ("list_s", "`cifar-tui list` wall time (s)", "<=", 0.5),
    ("sweep_plan_1000_s", "`cifar-tui run --dry-run` of a 1,000-run grid (s)", "<=", 1.0),
    ("tui_first_screen_s", "TUI first screen (s)", "<=", 1.5),
    ("augment_ratio_32", "RandAugment+erasing+MixUp/CutMix batched vs v2 per sample, 32x32", ">=", 10.0),
    ("randaugment_ratio_32", "RandAugment alone, batched vs v2 per image, 32x32", ">=", 10.0),
    ("train_augment_vs_plain_32", "training with RandAugment+MixUp/CutMix vs without, 32x32", ">=", 0.95),
    ("study_tab_first_s", "a study's tab at 1,000 runs: first showing (s)", "<=", 1.0),
    ("study_tab_redraw_s", "a study's tab at 1,000 runs: a run's change read and redrawn (s)", "<=", 0.1),
    ("slurm_submit_100_s", "a 100-run sweep submitted to SLURM as one array (s)", "<=", 2.0),
    ("slurm_runs_100_s", "`cifar-tui runs` with 100 runs queued in SLURM (s)", "<=", 1.0),
]
GOALS_GPU: list[tuple[str, str, str, float]] = [
    (k, label, op, {"pipeline_ratio_32": 10.0, "pipeline_ratio_224": 10.0, "train_vs_ceiling_224": 0.9}.get(k, goal))
    for k, label, op, goal in GOALS_CPU
]


def goals_for(device_type: str) -> list[tuple[str, str, str, float]]:
    return GOALS_GPU if device_type == "cuda" else GOALS_CPU


@dataclass(frozen=True)
class BenchPlan:
    """Sizes, steps and repeats of one benchmark run (quick, full, or tiny for tests)."""

    repeats: int = 5                       # pipeline windows and engine/ceiling epoch pairs
    sections: tuple[str, ...] = ("startup", "pipeline", "train", "tui", "augment", "study")
    optional_sections: tuple[str, ...] = ("slurm",)  # run only when named (--section): they submit jobs
    # 1. pipeline
    pipeline_sizes: tuple[int, ...] = (32, 224)
    pipeline_batch: int = 250              # the seed's batch
    pipeline_images: int = 10000           # synthetic train images both sides read from
    pipeline_min_s: float = 1.0            # each timing window runs at least this long
    pipeline_crop_flip: bool = True        # also time the engine with crop_flip at 32
    # 2. training
    backbone: str = "resnet18"
    train_batch: int = 250                 # the seed's batch
    train_steps: int = 4                   # steps per timed epoch (engine and ceiling alike)
    train_224: Optional[bool] = True       # None: on a GPU only (quick mode)
    train_224_batch: int = 32              # CPU (about 1 s a step); a GPU uses train_batch
    train_224_steps: int = 2
    train_224_repeats: int = 3
    # 3. TUI attached vs headless: one epoch of tui_steps per phase, "H"/"T" alternating
    tui_steps: int = 8
    tui_phases: str = "HTTHHTTH"
    tui_settle_s: float = 1.0              # after the TUI has attached, before timing
    # 4. start-up
    startup_repeats: int = 7
    tui_screen_repeats: int = 5
    # 6. a study's tab (bench/study.py)
    study_runs: int = 1000
    study_repeats: int = 20
    study_idle_s: float = 10.0

    @classmethod
    def full(cls) -> "BenchPlan":
        return cls()

    @classmethod
    def quick(cls) -> "BenchPlan":
        return cls(repeats=3, pipeline_images=5000, pipeline_min_s=0.5, train_steps=3, tui_steps=3,
                   tui_phases="HTTHHT", startup_repeats=5, tui_screen_repeats=3, train_224=None, study_idle_s=5.0)

    def for_device(self, device_type: str) -> "BenchPlan":
        """A GPU runs a step in milliseconds: more steps per timed epoch (same meaning)."""
        if device_type != "cuda":
            return self
        return replace(self, train_steps=max(self.train_steps, 40), train_224_steps=max(self.train_224_steps, 10),
                       tui_steps=max(self.tui_steps, 200))

    def wants_224_training(self, device_type: str) -> bool:
        return device_type == "cuda" if self.train_224 is None else self.train_224

    @classmethod
    def tiny(cls) -> "BenchPlan":
        """Seconds, for tests: every code path, meaningless numbers."""
        return cls(repeats=2, pipeline_sizes=(32, 48), pipeline_batch=32, pipeline_images=256, pipeline_min_s=0.05,
                   backbone="test_resnet", train_batch=8, train_steps=2, train_224=False, tui_steps=2, tui_phases="HT",
                   tui_settle_s=0.2, startup_repeats=1, tui_screen_repeats=1, study_runs=40, study_repeats=2,
                   study_idle_s=0.2)
