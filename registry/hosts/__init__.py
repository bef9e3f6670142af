"""Docker hosts that do not share the registry's disk (issue 22): how a version's files reach
them, and how the registry tells whether a host shares its disk at all.

    sharing     whether an engine provably sees the registry's snapshot folder (a probe file,
                read back through a container that bind-mounts it: checked, never assumed
                from the URL)
    cache       a host's content-addressed copy of the blobs its containers mount: a labelled
                Docker volume written through the Engine API's archive upload; only blobs the
                host lacks travel, and every blob a version needs is hashed on the host before
                a container mounts it
    placing     the decision for one deploy: a hard-linked snapshot folder where the disk is
                shared, else the host cache and the files the container mounts from it

Nothing here writes the ledger: a transfer that fails or is interrupted raises before a
release is recorded, and a blob half written on a host is never mounted (its size or its hash
gives it away on the next run, which sends it again).
"""
