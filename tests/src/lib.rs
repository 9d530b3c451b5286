//! Test harness: starts the real Grayline binaries on port 0 in temporary directories, gives
//! typed clients for them, and waits with deadlines instead of sleeps.
//!
//! The binaries are found next to the test executable (`target/debug`), or in
//! `GRAYLINE_BIN_DIR`; `scripts/test` builds them before running the tests.

pub mod browser;
pub mod cli;
pub mod dataplane;
pub mod dns;
pub mod etcd;
pub mod field;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod server;
pub mod wait;

pub use dataplane::{Load, Proxy, Replies, Traffic, Upstream, failure_share};
pub use process::bin_path;
pub use server::Server;
pub use wait::eventually;
