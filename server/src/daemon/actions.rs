//! What the packet thread asks the grant keeper to do: the one message type between them.

use std::net::IpAddr;
use std::sync::Arc;

use knock_shared::types::PortSpec;

use crate::load::LoadedConfig;

/// What the packet loop asks the grant manager to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// A verified SPA open.
    SpaOpen {
        /// Door index.
        door: usize,
        /// Key name.
        key: String,
        /// Address to admit.
        addr: IpAddr,
        /// Ports.
        ports: Vec<PortSpec>,
        /// Requested seconds (0 = door default).
        duration: u32,
    },
    /// A verified SPA close.
    SpaClose {
        /// Door index.
        door: usize,
        /// Key name.
        key: String,
        /// Address.
        addr: IpAddr,
        /// Ports.
        ports: Vec<PortSpec>,
    },
    /// A completed knock sequence.
    KnockOpen {
        /// Door index.
        door: usize,
        /// The knocker.
        addr: IpAddr,
    },
    /// The runtime changed (SIGHUP).
    Reload(Arc<LoadedConfig>),
}
