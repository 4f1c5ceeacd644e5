//! Applications shipped with holdfast for the `app` ack policy.

pub mod ingest;
