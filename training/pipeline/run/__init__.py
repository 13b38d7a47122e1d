"""The pipeline's run machinery: one sharded, resumable run (`sharded.run`) of the row stages, computed by one of two
executors (`local_executor`, `ray_executor`) through one row rule (`carried`), over shards planned as the input
streams by (`planning`, `shards`), reported in `summary.json` and `<stage>.jsonl` (`summary`); `pipeline_run` wraps it
with the input readers, the download and the index for `python -m training.pipeline run`, configured by `recipe`.
"""
