//! A TLS server for hyper and axum that applies a connection lifecycle policy and ends
//! every connection with close_notify.

#![forbid(unsafe_code)]

mod connection;
mod handle;
mod server;
pub mod signal;
mod summary;

pub use conn_lifecycle::{
    CloseOutcome, CloseReason, CloseSequence, PeerClose, Policy, PolicyBuilder, StatsSnapshot,
};

pub use crate::handle::Handle;
pub use crate::server::{BoxError, Server};
pub use crate::summary::Summary;
