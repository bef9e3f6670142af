"""The file half of the store: the content-addressed blob store (``blobs``), moving bytes once
while hashing them (``streams``), scanning and re-hashing the store (``scan``), and the stat
cache that spares re-reading unchanged weights (``statcache``)."""
