"""Data: fetch the upstream files, verify them, prepare model-ready arrays; the experiment registry."""
