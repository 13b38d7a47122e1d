"""Generated images whose relational logic is known exactly, for training and benchmarking without downloads.

Modules: `families` (`FAMILIES`, the relations), `attributes`, `shapes`, `dataset` (`synthetic_examples`,
`synthetic_dataset`), `literal` (literal descriptions), `negatives`. Import from them directly: this file imports
nothing, so importing one submodule stays light.
"""
