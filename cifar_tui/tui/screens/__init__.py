"""The app's screens: the main screen (tabs), the launch form, confirmations, quitting, compare."""
from .compare import CompareScreen
from .confirm import ConfirmScreen
from .launch import LaunchPlan, LaunchScreen
from .main import MainScreen
from .quit import QuitScreen

__all__ = ["CompareScreen", "ConfirmScreen", "LaunchPlan", "LaunchScreen", "MainScreen", "QuitScreen"]
