"""`python -m spiritlm_jax.prepare`: build a training corpus from a manifest of recordings and text
files (ArrayRecord shards per kind, corpus.json, bad_files.jsonl; resumable). The logic and the full
description are in spiritlm_jax/data/prepare.py; docs/prepare.md has examples."""

import sys

from spiritlm_jax.data.prepare import main

if __name__ == "__main__":
    sys.exit(main())
