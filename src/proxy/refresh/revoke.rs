//! Revoking a revoked family at the IdP too (RFC 7009): the presented token is sent once,
//! with the presenting client's own credentials, on a task of its own.

use super::{RefreshHandler, Request};
use crate::oauth::revocation::revocation_body;
use crate::observe::audit::{IdpRevocation, RequestFacts};
use crate::seal::fingerprint::TokenFingerprint;
use bytes::Bytes;
use pingora::http::RequestHeader;
use std::sync::Arc;

impl RefreshHandler {
    /// Ask the IdP to revoke the presented token of a revoked family, with the presenting
    /// client's own credentials (the gate holds no client secrets). Each token is sent once;
    /// revoking any live member revokes the grant at IdPs that tie tokens to it.
    pub(super) fn revoke_at_idp(self: &Arc<Self>, request: &Request, family: TokenFingerprint) {
        let Some(path) = self.settings.revocation_path.clone() else {
            return;
        };
        if self.revoked_at_idp.contains_key(&request.fingerprint) {
            return;
        }
        self.revoked_at_idp.insert(request.fingerprint, ());
        let authorization = request.header.headers.get("authorization").cloned();
        let form_client = authorization.is_none().then_some(&request.credentials);
        let body = revocation_body(&request.token, form_client);
        let header = RequestHeader::build("POST", path.as_bytes(), None).and_then(|mut h| {
            if let Some(host) = request.header.headers.get("host") {
                h.insert_header("host", host.clone())?;
            }
            if let Some(authorization) = authorization {
                h.insert_header("authorization", authorization)?;
            }
            h.insert_header("content-type", "application/x-www-form-urlencoded")?;
            h.insert_header("content-length", body.len().to_string())?;
            h.insert_header("x-request-id", request.request_id.as_str())?;
            Ok(h)
        });
        let Ok(header) = header else {
            return;
        };
        let handler = self.clone();
        let request_id = request.request_id.clone();
        let token_url = request.token_url.clone();
        let client_id = request.client.client_id.clone();
        let (source, fingerprint) = (request.source, request.fingerprint);
        tokio::spawn(async move {
            let result = tokio::time::timeout(
                handler.settings.request_timeout,
                handler.endpoint.send(header, Bytes::from(body)),
            )
            .await;
            let status = match result {
                Ok(Ok(answer)) => Some(answer.status),
                _ => None,
            };
            IdpRevocation {
                request: RequestFacts {
                    request_id: &request_id,
                    token_url: &token_url,
                    client_id: &client_id,
                    client_ip: source,
                    token: fingerprint.display(),
                },
                family: family.display(),
                status,
                now: handler.clock.now(),
            }
            .emit(&handler.auditor);
        });
    }
}
