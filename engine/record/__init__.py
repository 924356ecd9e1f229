"""The torch-free record of a run: what the supervisor, the CLI and the TUI read and write.

`status` (the vocabulary and `effective_status`), `events` (the one writer and reader of
events.jsonl), `paths` (run ids and the run directory's layout), `store` (the SQLite index) and
`rebuild` (the store from the run directories), `leases` (GPU leases), `job` (batch-job ids and
processes), `provenance` (the `start` event's provenance). Nothing here imports torch or Textual
(an import-linter contract in pyproject.toml).
"""
