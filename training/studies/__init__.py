"""Studies researchers run with relsim: conceptual distance by description length (and, from the other half of
issue 18, analogy scoring and a human-judgement app). Submodules are imported on use, so the command line stays
light."""
