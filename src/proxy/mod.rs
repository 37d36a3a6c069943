//! Pingora glue.
