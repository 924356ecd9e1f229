"""cifar-tui's training engine: config, data, models, losses, trainer, events, store.

Knows nothing of the UI; runs bare under `python -m engine.train` or torchrun.
"""
