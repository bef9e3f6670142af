"""Signatures and trust (issue 25): who vouches for a version, provably.

A *signature* is an OpenSSF model-signing bundle (a Sigstore bundle holding a DSSE envelope
over an in-toto statement) that lists, by sha256, every file of a version as ``registry
checkout`` writes it: the weights, the prompts under ``prompts/``, and ``cellar-record.json``,
the canonical JSON record whose sha256 is the version's manifest digest (image digest, runtime,
probes). So the upstream ``model_signing verify key DIR --signature SIG --public_key PUB``
accepts it on a checkout with no Cellar code. An *approval* is the same bundle whose signed
predicate also binds it to one environment, optionally until a time.

    keys.py      private and public keys: loading, passphrases from the environment, fingerprints
    bundles.py   the files a version's signature covers; sign; open and check a bundle
    policy.py    pure: does a version meet an environment's trust policy, and what is missing
    actions.py   sign, approve, key add/remove, trust policy, checkout, the deploy-time check
"""
