"""Tokenizer worker processes, each serving `proto/tokenizer.proto` on a Unix socket.

`worker.py` is the process side; `pool.py` is the router-side client that spreads
requests over the workers.
"""
