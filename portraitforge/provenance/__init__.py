"""Provenance of every output: invisible watermark, C2PA Content Credentials, NSFW gate, `inspect`.

`stamp.py` is the one entry point writers call; `watermark.py`, `credentials.py` and `nsfw.py` do one job each.
"""
