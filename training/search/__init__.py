"""Relational search over a user's own images: index a collection, query it by image or by relation text, and name
why two images match.

    from training.search.index import SearchIndex, index_collection
    from training.search.model import SearchModel
    from training.search.query import search
    from training.search.why import CaptionBank, why

    model = SearchModel.load("relsim-demo/run/final")
    index_collection("photos.index", model, folder="photos/")            # incremental, resumable
    index = SearchIndex("photos.index")
    hits = search(index, model, text="{Object}s stacked one on top of another into a tower", k=5)
    bank = CaptionBank.read("synthetic", model)                          # or a seed_group.json / captions file
    labels = why(bank, model.embed_image("photos/q.png"), index.stored_vectors([hits[0].id])[0])

Modules: `model` (the relsim model + its text encoder), `sources` (folder / list / dataset inputs), `index` (the
index folder: embeddings store, manifest, FAISS), `generation` (the record that makes its files one generation),
`query` (search by image, text or both), `why` (caption-bank labels), `synthetic_metrics` (relation-text mAP and
why accuracy on the synthetic benchmark), `pairwise` (scores of image pairs, the official quick start's one call),
`official_example` (the check of the official README's table). This file imports nothing, so
`python -m training.search --help` stays instant.
"""
