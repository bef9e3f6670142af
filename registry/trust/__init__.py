"""What makes the record trustworthy: the audit log's hash chain (``audit``, pure), the seals
computed with the home's key and the key file (``seals``), and the scrubbing of secrets from
everything that leaves a run (``secrets``)."""
