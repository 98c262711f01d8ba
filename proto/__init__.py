"""Protobuf contracts between embedserve's processes.

The `.proto` files here are the sources; `make proto` generates the Python modules
into `proto/*_pb/` (not committed).
"""
