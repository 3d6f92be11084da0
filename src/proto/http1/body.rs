//! Request body decoders (placeholder; implemented in its own change).
