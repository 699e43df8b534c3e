//! knock-spa protocol core.
//!
//! Everything here is a pure function or a state machine fed with the current time by its
//! caller: no sockets, no files, no clock, no randomness of its own (callers pass nonces and
//! padding in). That keeps every rule testable byte for byte and fuzzable. I/O lives in the
//! `knock-spad` (server) and `knock-spa` (client) crates.
//!
//! - [`types`]: protocols and ports, shared by every other module.
//! - [`wire`]: the SPA packet layout, sealing (client side) and the body codec.
//! - [`wire2`]: the version-2 (public-key) packet layout and sealing.
//! - [`verify`]: the server-side verifier: length, key id, HMAC, AEAD, body, clock, replay,
//!   policy, in that order.
//! - [`replay`]: the bounded replay cache and its on-disk serialisation.
//! - [`config`]: the knockd.conf reader with knock-spa's SPA directives.
//! - [`sequence`]: the classic knock-sequence tracker (knockd semantics, bounded memory).
//! - [`frame`]: parsing captured frames (Ethernet, Linux cooked, raw IP) into observations.
#![forbid(unsafe_code)]

pub mod config;
pub mod frame;
pub mod located;
pub mod replay;
pub mod sequence;
pub mod types;
pub mod verify;
pub mod wire;
pub mod wire2;
