"""The agency's private keys for recordings encrypted at rest (docs/encryption.md).

``keyring``: where the keys are and the small interface the rest of the station uses (a file
readable only by the station service today; a PKCS#11 token can implement the same
``unwrap``). ``opening``: the plaintext of a stored segment or voice note, checked against the
hash the device journal attests, for viewing, playing and playable copies.
"""
