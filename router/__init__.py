"""The router process: HTTP API, token-budget batch queue, and the clients of the
tokenizer pool and backend processes. Never imports torch or onnxruntime."""
