"""Data: example formats, word-level interleaving, the Grain input pipeline, corpus preparation."""
