//! Threshold-ECDSA protocol sessions over cggmp24: messages in, messages out; no network, no database.
