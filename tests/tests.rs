//! The core library's integration tests, one binary (see the README's "Layout").
//! Each module is one suite; `util` holds what several share.

mod atecc;
mod atecc_bus;
mod beacon;
mod client;
mod config;
mod corpus;
mod draw;
mod fortuna;
mod generate;
mod health;
mod kernel;
mod privilege;
mod proto;
mod store;
mod util;
