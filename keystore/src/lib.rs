//! Secrets sealed by a PKCS#11 token, the token-held identity key, and a rustls signer that signs inside the token.
