//! The body of an RFC 7009 revocation request for a refresh token, with the presenting
//! client's own credentials when they travel in the form (the gate holds no client secrets).

use crate::oauth::credentials::ClientCredentials;
use crate::seal::secret::RefreshToken;

/// `token=…&token_type_hint=refresh_token`, plus `client_id` (and `client_secret`) when the
/// client authenticated in the form rather than with an `Authorization` header (`None`).
/// The result carries secrets: send it, never log it.
pub fn revocation_body(token: &RefreshToken, form_client: Option<&ClientCredentials>) -> String {
    let encode = |v: &[u8]| {
        percent_encoding::percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let mut body = format!(
        "token={}&token_type_hint=refresh_token",
        encode(token.expose())
    );
    if let Some(client) = form_client {
        body.push_str("&client_id=");
        body.push_str(&encode(client.client_id.as_bytes()));
        if let Some(secret) = &client.secret {
            body.push_str("&client_secret=");
            body.push_str(&encode(secret.expose()));
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::form;
    use crate::seal::secret::ClientSecret;

    #[test]
    fn the_token_is_form_encoded_with_its_hint() {
        let body = revocation_body(&RefreshToken::new("a+b/c=&d"), None);
        let pairs = form::parse(body.as_bytes()).unwrap();
        let find = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(find("token").as_deref(), Some("a+b/c=&d"));
        assert_eq!(find("token_type_hint").as_deref(), Some("refresh_token"));
        assert_eq!(find("client_id"), None);
    }

    #[test]
    fn form_credentials_travel_in_the_body() {
        let client = ClientCredentials {
            client_id: "kube ctl".into(),
            secret: Some(ClientSecret::new("s&cret")),
            assertion: None,
        };
        let body = revocation_body(&RefreshToken::new("t"), Some(&client));
        let pairs = form::parse(body.as_bytes()).unwrap();
        let find = |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(find("client_id").as_deref(), Some("kube ctl"));
        assert_eq!(find("client_secret").as_deref(), Some("s&cret"));
    }
}
