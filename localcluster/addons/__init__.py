"""Add-ons a running local cluster may be given on demand, each a host process
beside it: kwok's fake nodes (the scale benchmark) and the real Kueue
(`python -m localcluster kwok|kueue up|down|status`)."""
