"""Remotes: the team's own OCI registry (Distribution, Harbor, Zot), where versions live as CNCF
ModelPack artifacts ``NAMESPACE/MODEL:VERSION``.

    settings    what a remote is (URL, TLS, plain HTTP) and where it is remembered (the home's
                config file; credentials never: the Docker credentials file or the environment)
    auth        credentials for a registry host, read when needed
    client      the OCI distribution API over ``requests``: HEAD, mount, chunked upload, GET
    modelpack   pure: a version <-> a ModelPack manifest, config and Cellar's own record layer
    publish     ``registry push --remote``
    fetching    ``registry pull``
"""
