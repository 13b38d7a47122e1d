"""The synthetic relational retrieval benchmark: relsim against attribute baselines on held-out-attribute images."""
