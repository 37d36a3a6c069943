//! The tombstone as a Redis hash: field names and their text form, both ways.

use crate::clock::UnixMillis;
use crate::oauth::credentials::ClientIdentity;
use crate::seal::fingerprint::{SecretFingerprint, TokenFingerprint};
use crate::store::TokenRecord;
use std::collections::HashMap;
use std::net::IpAddr;

/// The hash field counted by the replay script.
pub(super) const REPLAYS: &str = "replays";

/// The fields of a fresh tombstone (replays at 0), as field/value pairs.
pub(super) fn encode(record: &TokenRecord) -> Vec<(&'static str, Vec<u8>)> {
    let mut fields = vec![
        ("first_use", record.first_use.0.to_string().into_bytes()),
        ("client_id", record.client.client_id.as_bytes().to_vec()),
        ("source", record.source.to_string().into_bytes()),
        ("family", record.family.to_hex().into_bytes()),
        (REPLAYS, record.replays().to_string().into_bytes()),
    ];
    if let Some(secret) = &record.client.secret {
        fields.push(("secret", hex::encode(secret.0).into_bytes()));
    }
    if let Some(subject) = &record.subject {
        fields.push(("subject", subject.as_bytes().to_vec()));
    }
    fields
}

/// Why a stored hash is not a tombstone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed tombstone field `{0}`")]
pub(super) struct MalformedRecord(pub &'static str);

fn text<'a>(
    fields: &'a HashMap<String, Vec<u8>>,
    name: &'static str,
) -> Result<&'a str, MalformedRecord> {
    fields
        .get(name)
        .and_then(|value| std::str::from_utf8(value).ok())
        .ok_or(MalformedRecord(name))
}

fn fixed<const N: usize>(hex_text: &str, name: &'static str) -> Result<[u8; N], MalformedRecord> {
    let mut out = [0u8; N];
    hex::decode_to_slice(hex_text, &mut out).map_err(|_| MalformedRecord(name))?;
    Ok(out)
}

/// Rebuild a tombstone from its hash fields.
pub(super) fn decode(fields: &HashMap<String, Vec<u8>>) -> Result<TokenRecord, MalformedRecord> {
    let number =
        |name| text(fields, name).and_then(|t| t.parse::<u64>().map_err(|_| MalformedRecord(name)));
    let secret = match fields.get("secret") {
        None => None,
        Some(_) => Some(SecretFingerprint(fixed(text(fields, "secret")?, "secret")?)),
    };
    let subject = match fields.get("subject") {
        None => None,
        Some(_) => Some(text(fields, "subject")?.into()),
    };
    let source: IpAddr = text(fields, "source")?
        .parse()
        .map_err(|_| MalformedRecord("source"))?;
    let replays = u32::try_from(number(REPLAYS)?).map_err(|_| MalformedRecord(REPLAYS))?;
    let record = TokenRecord::new(
        UnixMillis(number("first_use")?),
        ClientIdentity {
            client_id: text(fields, "client_id")?.into(),
            secret,
        },
        source,
        subject,
        TokenFingerprint(fixed(text(fields, "family")?, "family")?),
    );
    Ok(record.with_replays(replays))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(secret: bool, subject: bool) -> TokenRecord {
        TokenRecord::new(
            UnixMillis(1_700_000_000_123),
            ClientIdentity {
                client_id: "kubernetes".into(),
                secret: secret.then_some(SecretFingerprint([3; 16])),
            },
            "2001:db8::7".parse().unwrap(),
            subject.then(|| "mlbiamext".into()),
            TokenFingerprint([5; 32]),
        )
        .with_replays(2)
    }

    fn round_trip(original: &TokenRecord) -> TokenRecord {
        let fields: HashMap<String, Vec<u8>> = encode(original)
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        decode(&fields).unwrap()
    }

    #[test]
    fn a_record_survives_the_round_trip() {
        for (secret, subject) in [(true, true), (false, false), (true, false)] {
            let original = record(secret, subject);
            let back = round_trip(&original);
            assert_eq!(back.first_use, original.first_use);
            assert_eq!(back.client, original.client);
            assert_eq!(back.source, original.source);
            assert_eq!(back.subject, original.subject);
            assert_eq!(back.family, original.family);
            assert_eq!(back.replays(), 2);
        }
    }

    #[test]
    fn a_damaged_hash_is_refused_with_the_field_named() {
        let mut fields: HashMap<String, Vec<u8>> = encode(&record(true, true))
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect();
        fields.insert("family".into(), b"zz".to_vec());
        assert_eq!(decode(&fields).unwrap_err(), MalformedRecord("family"));
        fields.remove("first_use");
        assert!(decode(&fields).is_err());
    }
}

/// A client identity as one claim field: hex client id, `:`, hex secret fingerprint (empty
/// when none).
pub(super) fn encode_identity(client: &ClientIdentity) -> String {
    let secret = client.secret.map(|s| hex::encode(s.0)).unwrap_or_default();
    format!("{}:{secret}", hex::encode(client.client_id.as_bytes()))
}

/// The identity [`encode_identity`] wrote.
pub(super) fn decode_identity(field: &[u8]) -> Option<ClientIdentity> {
    let text = std::str::from_utf8(field).ok()?;
    let (id, secret) = text.split_once(':')?;
    let client_id = String::from_utf8(hex::decode(id).ok()?).ok()?;
    let secret = match secret {
        "" => None,
        hex_secret => Some(SecretFingerprint(
            hex::decode(hex_secret).ok()?.try_into().ok()?,
        )),
    };
    Some(ClientIdentity {
        client_id: client_id.into(),
        secret,
    })
}

#[cfg(test)]
mod identity_tests {
    use super::*;

    #[test]
    fn identities_round_trip() {
        for client in [
            ClientIdentity {
                client_id: "kube:rnetes\0".into(),
                secret: Some(SecretFingerprint([7; 16])),
            },
            ClientIdentity {
                client_id: "".into(),
                secret: None,
            },
        ] {
            assert_eq!(
                decode_identity(encode_identity(&client).as_bytes()),
                Some(client)
            );
        }
        assert_eq!(decode_identity(b"zz"), None);
    }
}
