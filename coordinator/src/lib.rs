//! Confide coordinator library.
