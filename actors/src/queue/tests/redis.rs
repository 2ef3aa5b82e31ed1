//! Redis-specific tests.
