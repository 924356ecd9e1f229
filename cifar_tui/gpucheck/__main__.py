"""`python -m cifar_tui.gpucheck` (what scripts/gpu-check.sh runs)."""
import sys

from .check import main

sys.exit(main())
