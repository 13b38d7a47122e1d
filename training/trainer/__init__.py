"""Training relsim: the Trainer subclass, its loss and GradCache, data and collation, LoRA, export.

`python -m training.trainer train|export|convert-official ...` (console scripts `relsim-train`,
`relsim-convert-official`); kept free of heavy imports so that `--help` answers at once.
"""
