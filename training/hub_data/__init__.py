"""Building, downloading, exporting and publishing relsim's Hub datasets (`python -m training.hub_data ...`).

Modules: `captions`, `seed_groups`, `filter_labels` (the builders), `features` (configs and their features),
`validation` (row-level rejections), `images`, `export`, `publish`, `store`. Import from them directly: this file
imports nothing, so `python -m training.hub_data --help` does not import `datasets`.
"""
