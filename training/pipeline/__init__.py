"""The data half of relsim: turn images into relsim training data (filter -> caption -> check -> hand-off).

A pipeline is a list of stages (`training.pipeline.stages.Stage`) run by one runner (`training.pipeline.runner.run`):
the local executor here, a Ray executor for the same stages at scale. Command line: `python -m training.pipeline`.
This file imports nothing, so the command line's `--help` stays instant.
"""
