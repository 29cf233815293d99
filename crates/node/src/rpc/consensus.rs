//! Consensus methods: `piazza_getCommitCertificate`, the precommits that finalized a height on a
//! network of validators, read from the node's consensus store ([`App::commit_certificate`]). A
//! solo devnet has none and answers `null`.

use super::framing::{internal, rpc_error};
use super::methods::{param, to_value};
use crate::app::App;
use piazza_api::{error_code, CommitCertificateInfo, CommitSignatureInfo, RpcError};
use serde_json::Value;

/// `piazza_getCommitCertificate [height]` → [`CommitCertificateInfo`] or `null`.
pub(super) fn commit_certificate(app: &App, params: &[Value]) -> Result<Value, RpcError> {
    let height = param(params, 0, "height")?
        .as_u64()
        .filter(|h| *h >= 1)
        .ok_or_else(|| {
            rpc_error(
                error_code::INVALID_PARAMS,
                "height must be a block height (1 or more)",
                None,
            )
        })?;
    let certificate = app.commit_certificate(height).map_err(internal)?;
    let Some(certificate) = certificate else {
        return Ok(Value::Null);
    };
    to_value(CommitCertificateInfo {
        height: certificate.height,
        round: certificate.round,
        block_hash: certificate.block.to_hex(),
        signatures: certificate
            .signatures
            .iter()
            .map(|s| CommitSignatureInfo {
                validator: s.validator.to_string(),
                signature: s.signature.to_hex(),
            })
            .collect(),
    })
}
