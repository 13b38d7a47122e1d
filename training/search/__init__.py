"""Relational search for users: index a collection, query by image or relation text, pairwise scores."""
