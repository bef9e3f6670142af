"""The byte forms Cellar reads and writes, with no I/O policy of their own: canonical JSON
(what digests and the audit chain are computed over), the bounded YAML reader for manifests,
safetensors headers, and per-tensor digests."""
