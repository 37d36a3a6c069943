//! Micro-benchmarks of the hot pieces of a refresh grant: the policy decision,
//! fingerprinting, grant parsing, sealing, and the store's claim / complete / replay.
//! `cargo bench --bench micro`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use refresh_gate::clock::{SystemClock, UnixMillis};
use refresh_gate::http::answer::Answer;
use refresh_gate::oauth::credentials::ClientIdentity;
use refresh_gate::oauth::grant::{self, TokenPathRequest};
use refresh_gate::policy::{self, Policy, Presenter, Rotation, Rules};
use refresh_gate::seal::envelope::SealedAnswer;
use refresh_gate::seal::fingerprint::Fingerprinter;
use refresh_gate::seal::secret::RefreshToken;
use refresh_gate::store::{
    ExchangeOutcome, MemoryStore, MemoryStoreLimits, TokenRecord, TokenStore,
};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

fn token_answer() -> Answer {
    Answer {
        status: 200,
        headers: vec![("content-type".into(), b"application/json".to_vec())],
        body: Bytes::from(vec![b'x'; 1500]),
    }
}

fn client() -> ClientIdentity {
    ClientIdentity {
        client_id: "kubernetes".into(),
        secret: None,
    }
}

fn bench_pure(c: &mut Criterion) {
    let k = client();
    let who = Presenter {
        client: &k,
        source: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let rotation = Rotation {
        first_use: NOW,
        client: &k,
        source: IpAddr::V4(Ipv4Addr::LOCALHOST),
        replays: 3,
        answer_available: true,
        superseded: None,
        closed: None,
    };
    let rules = Rules::default();
    c.bench_function("policy/decide_replay", |b| {
        b.iter(|| policy::decide_replay(black_box(&rules), black_box(&rotation), &who, NOW))
    });

    let fingerprinter = Fingerprinter::new(&[7u8; 32]);
    let token = RefreshToken::new("x".repeat(43));
    c.bench_function("fingerprint/token", |b| {
        b.iter(|| fingerprinter.token(black_box(&token)))
    });

    let body = format!(
        "grant_type=refresh_token&refresh_token={}&client_id=kubernetes",
        "A1b2C3d4".repeat(6)
    );
    let content_type: &[&[u8]] = &[b"application/x-www-form-urlencoded"];
    let authorization: &[&[u8]] = &[b"Basic a3ViZXJuZXRlczpzZWNyZXQ="];
    let request = TokenPathRequest {
        method: "POST",
        query: None,
        content_type,
        authorization,
        content_encoding: &[],
        transfer_encoding: &[],
        connection: &[],
        dpop: &[],
        upgrade: false,
        body: body.as_bytes(),
    };
    let rules = grant::GrantRules::default();
    c.bench_function("grant/classify", |b| {
        b.iter(|| grant::classify(black_box(&request), &rules))
    });

    let answer = token_answer();
    c.bench_function("envelope/seal_1500B", |b| {
        b.iter(|| SealedAnswer::seal(black_box(&token), &answer))
    });
    let sealed = SealedAnswer::seal(&token, &answer);
    c.bench_function("envelope/open_1500B", |b| {
        b.iter(|| sealed.open(black_box(&token)))
    });
}

fn bench_store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let store = MemoryStore::new(
        &MemoryStoreLimits {
            tombstone_ttl: Duration::from_secs(900),
            max_tombstones: 1_000_000,
            max_in_flight: 10_000,
        },
        Arc::new(SystemClock),
    );
    let policy = Policy::uniform(Rules {
        grace_period: Duration::from_secs(60),
        max_reuses: u32::MAX,
        ..Rules::default()
    });
    let fingerprinter = Fingerprinter::new(&[7u8; 32]);
    let k = client();
    let who = Presenter {
        client: &k,
        source: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    let answer = Arc::new(SealedAnswer::seal(&RefreshToken::new("t"), &token_answer()));
    let mut n = 0u64;
    c.bench_function("store/claim_and_complete", |b| {
        b.iter(|| {
            n += 1;
            let fp = fingerprinter.token(&RefreshToken::new(format!("rt-{n}")));
            runtime.block_on(async {
                store.present(&fp, &who, &policy, NOW).await.unwrap();
                let outcome = ExchangeOutcome::Rotated {
                    record: Arc::new(TokenRecord::new(NOW, k.clone(), who.source, None, fp)),
                    answer: answer.clone(),
                    successor: None,
                };
                store.complete(&fp, outcome, &policy).await.unwrap();
            })
        })
    });
    let replayed = fingerprinter.token(&RefreshToken::new("rt-1"));
    c.bench_function("store/replay_lookup", |b| {
        b.iter(|| runtime.block_on(store.present(black_box(&replayed), &who, &policy, NOW)))
    });
}

criterion_group!(benches, bench_pure, bench_store);
criterion_main!(benches);
