"""The relational-retrieval evaluation: embed a pool with any method, retrieve, judge, report.

`python -m training.evaluation pool|embed|retrieve|judge|report|synthetic ...` (console script `relsim-eval`); see
the README's "Reproducing the paper's table". Kept free of imports so that `--help` answers at once.
"""
