//! Bookkeeping for tests that rotate many tokens through several gates while the store's
//! topology changes: what each rotated token was answered, background traffic (fresh
//! tokens and replays) recorded request by request, and the checks that say whether a
//! rotation was lost (a replay answered differently inside the window, a second upstream
//! exchange, or a replay answered 200 after the window).

use super::fake_idp::FakeIdp;
use super::{basic, client, oauth_error, refresh_body};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token the gate rotated: the answer it gave and when.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub token: String,
    pub answer: String,
    pub at: Instant,
}

/// The refresh token an answer carries.
pub fn successor(answer: &str) -> String {
    let value: serde_json::Value =
        serde_json::from_str(answer).unwrap_or_else(|_| panic!("not JSON: {answer}"));
    value["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token in {answer}"))
        .to_owned()
}

/// POST a refresh grant for `kubernetes` to `base` (`http://127.0.0.1:port`); (status, body),
/// status 0 when the request itself failed.
pub async fn refresh_at(base: &str, token: &str) -> (u16, String) {
    let sent = client()
        .post(format!("{base}/token"))
        .header("authorization", basic("kubernetes", "secret"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(refresh_body(token))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    match sent {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(e) => (0, format!("request failed: {e}")),
    }
}

/// Refresh `token` at `base`, retrying a 503 `temporarily_unavailable` (a store that is
/// down, or fenced just after a failover) until `retry_for` passes; the last answer.
pub async fn refresh_retrying(base: &str, token: &str, retry_for: Duration) -> (u16, String) {
    let deadline = Instant::now() + retry_for;
    loop {
        let (status, body) = refresh_at(base, token).await;
        if is_unavailable(status, &body) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        return (status, body);
    }
}

/// Whether a non-200 answer is the fail-closed 503 `temporarily_unavailable`.
pub fn is_unavailable(status: u16, body: &str) -> bool {
    status == 503
        && serde_json::from_str::<serde_json::Value>(body)
            .map(|v| v["error"] == "temporarily_unavailable")
            .unwrap_or(false)
}

/// One request of the background traffic.
#[derive(Debug, Clone)]
pub struct Sent {
    pub token: String,
    pub replay: bool,
    pub gate: usize,
    pub status: u16,
    pub body: String,
    pub at: Instant,
}

#[derive(Debug, Default)]
pub struct Ledger {
    /// Rotated tokens by token.
    pub rotated: BTreeMap<String, Rotated>,
    /// Every request, in the order answered.
    pub sent: Vec<Sent>,
    /// Fresh tokens that were not answered 200 (to present again later).
    pub unanswered: Vec<String>,
}

impl Ledger {
    /// A wrong answer: a replay answered 200 with other bytes than the token's answer.
    pub fn wrong_answers(&self) -> Vec<&Sent> {
        self.sent
            .iter()
            .filter(|s| s.replay && s.status == 200)
            .filter(|s| self.rotated.get(&s.token).map(|r| &r.answer) != Some(&s.body))
            .collect()
    }

    /// Requests answered neither 200 nor 503 `temporarily_unavailable`.
    pub fn unexpected(&self) -> Vec<&Sent> {
        self.sent
            .iter()
            .filter(|s| s.status != 200 && !is_unavailable(s.status, &s.body))
            .collect()
    }

    /// `requests` one per line, with when the token was rotated and when the request was
    /// answered, in milliseconds from `origin` (negative: before it).
    pub fn describe(&self, requests: &[&Sent], origin: Instant) -> String {
        let ms = |at: Instant| {
            if at >= origin {
                (at - origin).as_millis() as i64
            } else {
                -((origin - at).as_millis() as i64)
            }
        };
        requests
            .iter()
            .map(|s| {
                let rotated = self
                    .rotated
                    .get(&s.token)
                    .map(|r| format!("{:+}ms", ms(r.at)))
                    .unwrap_or_else(|| "never".to_owned());
                format!(
                    "  {} ({}) on gate {}: rotated at {rotated}, answered {} at {:+}ms: {}\n",
                    s.token,
                    if s.replay { "replay" } else { "fresh" },
                    s.gate,
                    s.status,
                    ms(s.at),
                    s.body
                )
            })
            .collect()
    }

    pub fn count(&self, status: u16) -> usize {
        self.sent.iter().filter(|s| s.status == status).count()
    }
}

/// How old an earlier rotated token the traffic replays may be: half the shortest grace
/// period the tests run it with (8 s).
pub const RECENT: Duration = Duration::from_secs(4);

/// Background refreshes through several gates until stopped: each worker presents a fresh
/// token on one gate, replays it at once on the next, and replays an earlier rotated token
/// (one rotated less than [`RECENT`] ago, so well inside any test's window even when a
/// loaded machine delays the request by seconds).
pub struct Traffic {
    pub ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    /// `workers` tasks over `gates` (base URLs), tokens minted by `idp`.
    pub fn start(idp: Arc<FakeIdp>, gates: Vec<String>, workers: usize) -> Traffic {
        Traffic::start_seeded(idp, gates, workers, Vec::new())
    }

    /// The same, replaying `seed` (tokens rotated before) along with its own.
    pub fn start_seeded(
        idp: Arc<FakeIdp>,
        gates: Vec<String>,
        workers: usize,
        seed: Vec<Rotated>,
    ) -> Traffic {
        let mut ledger = Ledger::default();
        for r in seed {
            ledger.rotated.insert(r.token.clone(), r);
        }
        let ledger = Arc::new(Mutex::new(ledger));
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..workers)
            .map(|w| {
                let (idp, gates, ledger, stop) =
                    (idp.clone(), gates.clone(), ledger.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = w;
                    while !stop.load(Ordering::SeqCst) {
                        let token = idp.mint();
                        let first = n % gates.len();
                        let (status, body) = refresh_at(&gates[first], &token).await;
                        let fresh = Sent {
                            token: token.clone(),
                            replay: false,
                            gate: first,
                            status,
                            body: body.clone(),
                            at: Instant::now(),
                        };
                        {
                            let mut ledger = ledger.lock().unwrap();
                            if status == 200 {
                                ledger.rotated.insert(
                                    token.clone(),
                                    Rotated {
                                        token: token.clone(),
                                        answer: body,
                                        at: fresh.at,
                                    },
                                );
                            } else {
                                ledger.unanswered.push(token.clone());
                            }
                            ledger.sent.push(fresh);
                        }
                        let mut replays = Vec::new();
                        if status == 200 {
                            replays.push(token.clone());
                        }
                        let earlier = {
                            let ledger = ledger.lock().unwrap();
                            let recent: Vec<&String> = ledger
                                .rotated
                                .values()
                                .filter(|r| r.at.elapsed() < RECENT)
                                .map(|r| &r.token)
                                .collect();
                            (!recent.is_empty()).then(|| recent[(n * 7919) % recent.len()].clone())
                        };
                        replays.extend(earlier);
                        for (k, replayed) in replays.into_iter().enumerate() {
                            let gate = (first + 1 + k) % gates.len();
                            let (status, body) = refresh_at(&gates[gate], &replayed).await;
                            ledger.lock().unwrap().sent.push(Sent {
                                token: replayed,
                                replay: true,
                                gate,
                                status,
                                body,
                                at: Instant::now(),
                            });
                        }
                        n += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Traffic {
            ledger,
            stop,
            workers,
        }
    }

    /// Stop the workers and return what they recorded.
    pub async fn stop(self) -> Ledger {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.unwrap();
        }
        std::mem::take(&mut *self.ledger.lock().unwrap())
    }
}

/// Present each token the traffic left unanswered again (every `gates` in turn) until it is
/// answered 200 or `timeout` passes; those answered join `ledger.rotated`. Returns the tokens
/// still unanswered with their last (status, body).
pub async fn settle_unanswered(
    ledger: &mut Ledger,
    gates: &[String],
    timeout: Duration,
) -> Vec<(String, u16, String)> {
    let deadline = Instant::now() + timeout;
    let mut left = Vec::new();
    for (n, token) in std::mem::take(&mut ledger.unanswered)
        .into_iter()
        .enumerate()
    {
        loop {
            let (status, body) = refresh_at(&gates[n % gates.len()], &token).await;
            if status == 200 {
                ledger.rotated.insert(
                    token.clone(),
                    Rotated {
                        token: token.clone(),
                        answer: body,
                        at: Instant::now(),
                    },
                );
                break;
            }
            if Instant::now() > deadline || !is_unavailable(status, &body) {
                left.push((token, status, body));
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    left
}

/// A replay that did not get the token's answer: (token, status, body).
pub type Mismatch = (String, u16, String);

/// Replay every rotated token whose window (`grace`) has at least `margin` left, on the
/// gates in turn, retrying a 503 `temporarily_unavailable` until `retry_for` passes; the
/// replays not answered with the byte-identical answer.
pub async fn replays_inside_window(
    rotated: &[Rotated],
    gates: &[String],
    grace: Duration,
    margin: Duration,
    retry_for: Duration,
) -> (usize, Vec<Mismatch>) {
    let deadline = Instant::now() + retry_for;
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for (n, r) in rotated.iter().enumerate() {
        if r.at + grace < Instant::now() + margin {
            continue;
        }
        checked += 1;
        loop {
            let (status, body) = refresh_at(&gates[n % gates.len()], &r.token).await;
            if is_unavailable(status, &body) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if (status, &body) != (200, &r.answer) {
                mismatches.push((r.token.clone(), status, body));
            }
            break;
        }
    }
    (checked, mismatches)
}

/// Wait until every window (`grace` after each rotation, plus `margin`) is over, then replay
/// each rotated token; the replays not refused 400 `invalid_grant`.
pub async fn refused_after_window(
    rotated: &[Rotated],
    gates: &[String],
    grace: Duration,
    margin: Duration,
) -> Vec<Mismatch> {
    if let Some(last) = rotated.iter().map(|r| r.at).max() {
        let until = last + grace + margin;
        let now = Instant::now();
        if until > now {
            tokio::time::sleep(until - now).await;
        }
    }
    let mut accepted = Vec::new();
    for (n, r) in rotated.iter().enumerate() {
        let (status, body) = refresh_at(&gates[n % gates.len()], &r.token).await;
        let refused = status == 400
            && serde_json::from_str::<serde_json::Value>(&body).is_ok()
            && oauth_error(&body) == "invalid_grant";
        if !refused {
            accepted.push((r.token.clone(), status, body));
        }
    }
    accepted
}

/// Rotated tokens the IdP saw more than once: (token, exchanges).
pub fn exchanged_twice(idp: &FakeIdp, rotated: &[Rotated]) -> Vec<(String, usize)> {
    rotated
        .iter()
        .map(|r| (r.token.clone(), idp.calls_for(&r.token)))
        .filter(|(_, calls)| *calls > 1)
        .collect()
}

/// Every token the IdP saw more than once (rotated or not).
pub fn any_exchanged_twice(idp: &FakeIdp, tokens: &[String]) -> Vec<(String, usize)> {
    tokens
        .iter()
        .map(|t| (t.clone(), idp.calls_for(t)))
        .filter(|(_, calls)| *calls > 1)
        .collect()
}

/// Whether the process `pid` still runs (not exited, not a zombie).
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .next()?
                .to_owned();
            Some(state != "Z" && state != "X")
        })
        .unwrap_or(false)
}
