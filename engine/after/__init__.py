"""After training: a run as a model. `run_model` loads a run's checkpoint as it trained;
`evaluate` (top-1/5, per class, confusion, ensembles, TTA) with `eval_files` (its CSV/PNG/JSON
files), `predict` (image files, read by `images`), `export` (ONNX / TorchScript with a parity check).
"""
