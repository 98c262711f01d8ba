"""The public tei.v1 gRPC API, served from the router process beside HTTP."""
