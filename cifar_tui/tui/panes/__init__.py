"""The tabs of the app, one module each: experiments, runs, leaderboard, and a run view per run."""
from .experiments import ExperimentsPane
from .leaderboard import LeaderboardPane
from .run_view import RunView
from .runs import RunsPane

__all__ = ["ExperimentsPane", "LeaderboardPane", "RunView", "RunsPane"]
