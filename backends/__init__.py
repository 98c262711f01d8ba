"""Backend processes: one per device, each serving `proto/backend.proto` on a Unix socket.

The engine (torch today) is chosen by name and imported lazily, so a process
imports only the framework it runs.
"""
