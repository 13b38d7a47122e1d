"""Generated images whose relational logic is known exactly, for training and benchmarking without downloads.

Modules: `families` (`FAMILIES`, the relations), `attributes`, `shapes`, `dataset` (`synthetic_examples`,
`synthetic_dataset`), `literal` (literal descriptions), `negatives`; the compositional world (issue 27): `factors`
(relations as combinations of layout, change, exception and structure), `drawing`, `relations` (the held-out
relation split, `relation_examples`, `relation_dataset`). Import from them directly: this file imports
nothing, so importing one submodule stays light.
"""
