//! Every state key the verify module owns. Numbers are big-endian so key order is numeric order.

use piazza_primitives::Address;

pub fn params() -> Vec<u8> {
    b"verify/params".to_vec()
}

pub fn auditor(address: &Address) -> Vec<u8> {
    let mut key = b"verify/auditor/".to_vec();
    key.extend_from_slice(&address.0);
    key
}

/// Auditors able to audit a model.
pub fn auditing(model: &str) -> Vec<u8> {
    let mut key = b"verify/auditing/".to_vec();
    key.extend_from_slice(model.as_bytes());
    key
}

/// Why a posted job is not settling yet (audit, dispute, redundant group).
pub fn hold(job: u64) -> Vec<u8> {
    let mut key = b"verify/hold/".to_vec();
    key.extend_from_slice(&job.to_be_bytes());
    key
}

/// The auditor whose attestation a job carries.
pub fn attestation(job: u64) -> Vec<u8> {
    let mut key = b"verify/attestation/".to_vec();
    key.extend_from_slice(&job.to_be_bytes());
    key
}

/// The dispute over a job's result.
pub fn dispute(job: u64) -> Vec<u8> {
    let mut key = b"verify/dispute/".to_vec();
    key.extend_from_slice(&job.to_be_bytes());
    key
}

/// Jobs whose audit draw happens at `height`.
/// Jobs with an audit or dispute deadline at `height`.
pub fn deadlines(height: u64) -> Vec<u8> {
    let mut key = b"verify/deadlines/".to_vec();
    key.extend_from_slice(&height.to_be_bytes());
    key
}

/// Jobs with an open audit or dispute involving `address`.
pub fn tasks(address: &Address) -> Vec<u8> {
    let mut key = b"verify/tasks/".to_vec();
    key.extend_from_slice(&address.0);
    key
}
