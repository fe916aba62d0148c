//! Shared helpers for tether's cross-crate tests.
