"""The relational-retrieval evaluation: embed a pool with any method, retrieve, judge, report.

`python -m training.evaluation embed|retrieve|judge|report ...`; see the README's "Reproducing the paper's table".
"""
