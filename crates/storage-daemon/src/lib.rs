//! The storage provider daemon (DESIGN.md §6): the HTTP shard service over the on-disk shard
//! store ([`server`], [`service`]), the client side of it ([`fetch`]: upload, checked download
//! of a shard or a whole blob, rebuild of a lost shard).
//!
//! Invariants:
//! - The service takes an upload only for a shard the chain assigns to this provider, of the
//!   record's length and root; it serves only shards that still hash to their root.
//! - Everything fetched is checked before use: a shard against its root, a blob against its id.
//! - Every server bound is a field of [`server::ServerLimits`]; links no ML stack.
//!
//! ```no_run
//! # async fn example(manifest: piazza_blob::erasure::Manifest, holders: Vec<piazza_storage_daemon::fetch::Holder>) {
//! use piazza_storage_daemon::fetch;
//! let blob = fetch::get_blob(&fetch::http_client(), &manifest, &holders).await.unwrap();
//! # let _ = blob;
//! # }
//! ```

pub mod daemon;
pub mod fetch;
pub mod provider;
pub mod rpc;
pub mod server;
pub mod service;
