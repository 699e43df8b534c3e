//! Fixtures shared by the reader's test modules: three inline keys and shorthands for ports
//! and addresses.
//!
//! Role: test-only (declared under `cfg(test)`), so each test module can live next to the code
//! it tests. What it must not do: hold tests or assertions of its own.

use std::net::{IpAddr, Ipv4Addr};

use crate::types::{PortSpec, Proto};

pub(super) const ALICE: &str = "alice:BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
pub(super) const BOB: &str = "bob:CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";
pub(super) const CAROL: &str = "carol:CwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCwsLCws=";
/// The secret part of ALICE, to check it never appears in a message.
pub(super) const ALICE_SECRET: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

pub(super) fn ps(port: u16, proto: Proto) -> PortSpec {
    PortSpec::new(proto, port).expect("test ports are non-zero")
}

pub(super) fn tcp(ports: &[u16]) -> Vec<PortSpec> {
    ports.iter().map(|&p| ps(p, Proto::Tcp)).collect()
}

pub(super) fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}
