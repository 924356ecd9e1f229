"""cifar-tui's training engine: config, data, models, losses, the trainer (flat, here);
`record/` (status, events, store: the torch-free record of a run) and `after/` (a trained run as
a model: eval, predict, export).

Knows nothing of the UI; runs bare under `python -m engine.train` or torchrun.
"""
