"""Payload encryption at rest: a job's arguments, result and error messages stored in
Redis as AES-256-GCM ciphertext, under versioned keys that can be rotated.

- ``keyring``: the keys (from ``JOBVISOR_ENCRYPTION_KEYS`` or ``[encryption] key_file``),
  their ids, which one is active.
- ``envelope``: one sealed value (key id, nonce, ciphertext) and its associated data.
- ``sealer``: what a job's arguments, result and errors become, and back.
- ``rotation``: re-encrypting stored jobs under the active key.

``cryptography`` is imported only when a key is used, so a process that encrypts
nothing does not need it (``pip install 'jobvisor[encryption]'``).
"""
