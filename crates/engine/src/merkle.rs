//! Binary BLAKE3 Merkle trees with domain separation, used for traces and weight commitments:
//! piazza-trace's [`piazza_trace::merkle`], re-exported here under its old path.

pub use piazza_trace::merkle::*;
