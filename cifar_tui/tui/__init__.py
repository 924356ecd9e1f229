"""The Textual app (`cifar-tui` with no subcommand), one module per part: panes/ (the tabs),
screens/ (dialogs and the compare screen), widgets/, messages, commands (the palette), and the
App that composes them. Importing this package imports nothing heavy: the App is in .app."""
