"""The data half of relsim: turn images into relsim training data (filter -> caption -> check -> hand-off).

A pipeline is a list of stages (`training.pipeline.stages.Stage`) run by one sharded run
(`training.pipeline.run.sharded.run`) with one of two executors: local (this process) or Ray (the same stages at
scale). Command line: `python -m training.pipeline`.
This file imports nothing, so the command line's `--help` stays instant.
"""
