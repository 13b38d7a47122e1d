"""Studies people run with relsim: analogy scoring lives in `training.evaluation.analogy`; here are the human-judgement
tabs of the search app with their SQLite store (`judgement_store`, `app`), and the conceptual distance by description
length (`conceptual_distance*`). Submodules are imported on use, so the command line stays light."""
