//! Request head parsing (placeholder; implemented in its own change).
