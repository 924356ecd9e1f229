"""Command groups of the `cifar-tui` CLI, registered from cifar_tui/cli.py."""
