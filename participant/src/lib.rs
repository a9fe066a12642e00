//! Confide participant library.
