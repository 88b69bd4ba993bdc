"""Peers: the same pipeline written with other frameworks, for the bench's ratios.

Each peer is an optional extra (``pip install -e '.[peer]'``); a peer that cannot be imported is
reported as unavailable with the reason, never with a number.
"""
