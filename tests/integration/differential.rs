//! Differential test of the fail-closed rule against real parsers. A deterministic corpus
//! (the committed fuzz seeds, plus generators for each class of disguise: methods, media
//! types and charsets, escapes, folded and rewritten names and grant types, other
//! separators, the query, token-path spellings) is judged by six IdP stacks (Node /
//! node-oidc-provider, Python, Go / fosite and Dex, Jetty 9, PHP, Rack) and sent through the
//! real gate. Whenever any stack reads a refresh grant, the gate must have decided it as one
//! or refused it, never forwarded it untouched; and where the gate's classifier reads a
//! refresh grant, every stack that reads one reads the same token.

use crate::common;

use common::oracles::Oracles;
use common::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FORM: &str = "application/x-www-form-urlencoded";

/// One generated request and the class it stands for.
struct Sample {
    class: &'static str,
    raw: Vec<u8>,
}

fn raw_request(method: &str, target: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: idp\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn basic() -> (&'static str, String) {
    ("Authorization", common::basic("k", "secret"))
}

fn percent_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

fn utf16(s: &str, big_endian: bool) -> String {
    s.encode_utf16()
        .flat_map(|u| {
            if big_endian {
                u.to_be_bytes()
            } else {
                u.to_le_bytes()
            }
        })
        .map(|b| format!("%{b:02X}"))
        .collect()
}

fn utf32(s: &str) -> String {
    s.chars()
        .flat_map(|c| (c as u32).to_be_bytes())
        .map(|b| format!("%{b:02X}"))
        .collect()
}

/// Spellings of `grant_type`'s value `refresh_token` that some stack may fold to it.
fn grant_values() -> Vec<String> {
    let mut values: Vec<String> = [
        "refresh_token",
        "refresh_token+",
        "+refresh_token",
        "%20refresh_token",
        "refresh_token%20",
        "refresh_token%09",
        "refresh_token%0A",
        "refresh_token%00",
        "%00refresh_token",
        "refresh_token%0B",
        "refresh_token%1F",
        "refresh_token%C2%A0",
        "%E2%80%8Brefresh_token",
        "%EF%BB%BFrefresh_token",
        "refresh_token%E3%80%80",
        "REFRESH_TOKEN",
        "Refresh_Token",
        "refresh_tokeN",
        "refre%C5%BFh_token",
        "refresh_to%E2%84%AAen",
        "%EF%BD%92efresh_token",
        "refresh_token+authorization_code",
        "authorization_code+refresh_token",
        "refresh_token%2Cpassword",
        "refresh_token+refresh_token",
        "%72efresh_token",
        "refresh%5Ftoken",
        "refresh%255Ftoken",
        "%u0072efresh_token",
        "%U0072efresh_token",
        "refresh%u005Ftoken",
        "refresh_token;",
        "refresh_token%3B",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    values.push(percent_all("refresh_token"));
    values
}

/// Spellings of a parameter name.
fn name_spellings(name: &str) -> Vec<String> {
    let upper = name.to_uppercase();
    let mut first_upper = name.to_owned();
    first_upper[..1].make_ascii_uppercase();
    vec![
        name.to_owned(),
        upper,
        first_upper,
        format!("{name}+"),
        format!("+{name}"),
        format!("{name}%20"),
        format!("{name}%00"),
        format!("%EF%BB%BF{name}"),
        name.replace('_', "%5F"),
        name.replace('_', "%255F"),
        name.replace('_', "%u005F"),
        name.replace('_', "%EF%BC%BF"),
        name.replacen('e', "%u0065", 1),
        name.replacen('s', "%C5%BF", 1),
        name.replacen('k', "%E2%84%AA", 1),
        name.replacen('i', "%C4%B1", 1),
        percent_all(name),
        name.replace('_', "."),
        name.replace('_', "+"),
        name.replacen('_', "[", 1),
        format!("{name}]"),
        format!("[{name}]"),
        format!("{name}[]"),
        format!("{name}[x]"),
        name.replace('_', "%2E"),
        name.replace('_', "-"),
    ]
}

fn token(n: usize) -> String {
    format!("rt{n:06}AbCdEfGhIjKlMnOp")
}

fn corpus() -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        token(n)
    };
    let mut push = |class: &'static str, raw: Vec<u8>| samples.push(Sample { class, raw });
    let form = || ("Content-Type", FORM.to_owned());

    // Methods, with a plain refresh body.
    for method in [
        "POST", "post", "Post", "PUT", "PATCH", "GET", "DELETE", "OPTIONS", "put",
    ] {
        let body = format!("grant_type=refresh_token&refresh_token={}", next());
        push(
            "method",
            raw_request(method, "/token", &[form(), basic()], body.as_bytes()),
        );
    }
    // Media types and charsets.
    for content_type in [
        FORM.to_owned(),
        format!("{FORM}; charset=utf-8"),
        format!("{FORM}; charset=\"UTF-8\""),
        format!("{FORM}; charset=us-ascii"),
        format!("{FORM}; charset=ISO-8859-1"),
        format!("{FORM};charset=UTF-16BE"),
        format!("{FORM}; charset=utf-16"),
        format!("{FORM}; charset=UTF-16LE"),
        format!("{FORM}; charset=UTF-32"),
        format!("{FORM}; charset=utf-8; charset=utf-16be"),
        format!("{FORM}, application/json"),
        "Application/X-WWW-Form-Urlencoded".to_owned(),
        "application/x-www-form-urlencoded ".to_owned(),
        "text/plain".to_owned(),
        "application/json".to_owned(),
        "multipart/form-data; boundary=b".to_owned(),
        "application/octet-stream".to_owned(),
    ] {
        let t = next();
        let plain = format!("grant_type=refresh_token&refresh_token={t}");
        let wide_be = format!(
            "{}={}&{}={}",
            utf16("grant_type", true),
            utf16("refresh_token", true),
            utf16("refresh_token", true),
            utf16(&t, true)
        );
        let wide_le = format!(
            "{}={}&{}={}",
            utf16("grant_type", false),
            utf16("refresh_token", false),
            utf16("refresh_token", false),
            utf16(&t, false)
        );
        let wide32 = format!(
            "{}={}&{}={}",
            utf32("grant_type"),
            utf32("refresh_token"),
            utf32("refresh_token"),
            utf32(&t)
        );
        for body in [plain, wide_be, wide_le, wide32] {
            for method in ["POST", "PUT"] {
                let headers = [("Content-Type", content_type.clone()), basic()];
                push(
                    "media type",
                    raw_request(method, "/token", &headers, body.as_bytes()),
                );
            }
        }
    }
    // No Content-Type, two Content-Types, two Authorizations, a Content-Encoding.
    let t = next();
    let plain = format!("grant_type=refresh_token&refresh_token={t}");
    push(
        "headers",
        raw_request("POST", "/token", &[basic()], plain.as_bytes()),
    );
    push(
        "headers",
        raw_request(
            "POST",
            "/token",
            &[form(), ("Content-Type", "application/json".into()), basic()],
            plain.as_bytes(),
        ),
    );
    push(
        "headers",
        raw_request(
            "POST",
            "/token",
            &[form(), basic(), ("Authorization", common::basic("x", "y"))],
            plain.as_bytes(),
        ),
    );
    push(
        "headers",
        raw_request(
            "POST",
            "/token",
            &[form(), basic(), ("Content-Encoding", "identity".into())],
            plain.as_bytes(),
        ),
    );
    // Disguised bodies (grant_type values, parameter names, separators), each sent under
    // every wrapper: method, token-path spelling and media type.
    let mut bodies = Vec::new();
    for value in grant_values() {
        for tail in ["", "&x=%zz", "&x=%u00"] {
            bodies.push((
                "grant_type",
                format!("grant_type={value}&refresh_token={}{tail}", next()),
            ));
        }
    }
    for spelled in name_spellings("grant_type") {
        for tail in ["", "&x=%zz"] {
            bodies.push((
                "name",
                format!("{spelled}=refresh_token&refresh_token={}{tail}", next()),
            ));
            bodies.push((
                "name",
                format!("grant_type=authorization_code&code=c&{spelled}=refresh_token&refresh_token={}{tail}", next()),
            ));
        }
    }
    for spelled in name_spellings("refresh_token") {
        for tail in ["", "&x=%zz"] {
            bodies.push((
                "name",
                format!("grant_type=refresh_token&{spelled}={}{tail}", next()),
            ));
        }
        // A second token under a disguised name beside the exact one (which one does the
        // IdP exchange?).
        bodies.push((
            "name",
            format!(
                "grant_type=refresh_token&refresh_token={}&{spelled}={}",
                next(),
                next()
            ),
        ));
    }
    // Both names disguised the same way, beside an exact other grant.
    for (grant, token) in name_spellings("grant_type")
        .into_iter()
        .zip(name_spellings("refresh_token"))
    {
        bodies.push((
            "paired names",
            format!(
                "grant_type=authorization_code&code=c&{grant}=refresh_token&{token}={}",
                next()
            ),
        ));
    }
    for template in [
        "grant_type=authorization_code;grant_type=refresh_token;refresh_token={t}",
        "code=c;grant_type=refresh_token&refresh_token={t}",
        "grant_type=refresh_token;refresh_token={t}",
        "grant_type=refresh_token&refresh_token={t}&refresh_token=",
        "grant_type=refresh_token&refresh_token={t}&grant_type=",
        "grant_type=&grant_type=refresh_token&refresh_token={t}",
        "grant_type%3Drefresh_token%26refresh_token%3D{t}",
        "x=1%26grant_type%3Drefresh_token%26refresh_token%3D{t}",
        "grant_type=refresh_token&refresh_token=%20{t}",
        "grant_type=refresh_token&refresh_token={t}%20",
        "grant_type=refresh_token&refresh_token={t}%00",
        "grant_type=refresh_token&refresh_token={t}%zz",
        "grant_type=refresh_token&refresh_token={t}&%zz",
        "\u{feff}grant_type=refresh_token&refresh_token={t}",
        "grant_type=refresh_token&&refresh_token={t}&",
        "&grant_type=refresh_token&refresh_token={t}",
        "grant_type=refresh_token&refresh_token={t}\r\n",
        "grant_type=refresh_token&refresh_token={t}&client_id=k&client_id=",
        "grant_type=refresh_token&refresh_token={t}&Client_Id=other",
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&refresh_token={t}",
        "grant_type=authorization_code&code=c&refresh_token={t}",
    ] {
        bodies.push(("separators", template.replace("{t}", &next())));
    }
    let wrappers: [(&str, &str, String); 7] = [
        ("POST", "/token", FORM.to_owned()),
        ("PUT", "/token", FORM.to_owned()),
        ("post", "/token", FORM.to_owned()),
        ("POST", "/TOKEN", FORM.to_owned()),
        ("POST", "/token/", format!("{FORM}; charset=ISO-8859-1")),
        ("POST", "/token", format!("{FORM}; charset=UTF-16")),
        ("PATCH", "/token", format!("{FORM}; charset=utf-8")),
    ];
    for (class, body) in &bodies {
        for (method, path, content_type) in &wrappers {
            let headers = [("Content-Type", content_type.clone()), basic()];
            push(class, raw_request(method, path, &headers, body.as_bytes()));
        }
    }
    // The query: a refresh grant or its token there, on POST and GET.
    for query in [
        "grant_type=refresh_token&refresh_token={t}",
        "refresh_token={t}",
        "Refresh_Token={t}",
        "%72efresh_token={t}&x=%zz",
        "%u0072efresh_token={t}",
        "x=1;refresh_token={t}",
        "refresh%255Ftoken={t}",
    ] {
        let target = format!("/token?{}", query.replace("{t}", &next()));
        push("query", raw_request("GET", &target, &[basic()], b""));
        let body = "grant_type=refresh_token".to_owned();
        push(
            "query",
            raw_request("POST", &target, &[form(), basic()], body.as_bytes()),
        );
        let body = "grant_type=authorization_code&code=c";
        push(
            "query",
            raw_request("POST", &target, &[form(), basic()], body.as_bytes()),
        );
    }
    // JSON bodies with escapes.
    for json in [
        r#"{"grant_type":"refresh_token","refresh_token":"{t}"}"#,
        r#"{"grant\u005ftype":"refresh\u005ftoken","refresh\u005ftoken":"{t}"}"#,
    ] {
        let body = json.replace("{t}", &next());
        let headers = [("Content-Type", "application/json".to_owned()), basic()];
        push(
            "json",
            raw_request("POST", "/token", &headers, body.as_bytes()),
        );
    }
    // Token-path spellings.
    for path in [
        "/TOKEN",
        "/Token",
        "/token.",
        "/token%20",
        "/token.json",
        "/%74oken",
        "/%2574oken",
        "/token;x=1",
        "//token",
        "/x/../token",
        "/token/",
        "/token%00",
    ] {
        let body = format!("grant_type=REFRESH_TOKEN&refresh_token={}", next());
        push(
            "path",
            raw_request("POST", path, &[form(), basic()], body.as_bytes()),
        );
        let body = format!("grant_type=refresh_token&refresh_token={}", next());
        push(
            "path",
            raw_request("PUT", path, &[form(), basic()], body.as_bytes()),
        );
    }
    // The committed fuzz seeds: method, query, content type, authorization, body at 0xFF.
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/grant");
    let mut names: Vec<_> = std::fs::read_dir(&seeds)
        .expect("fuzz/corpus/grant")
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let data = std::fs::read(&path).unwrap();
        let parts: Vec<&[u8]> = data.splitn(5, |b| *b == 0xff).collect();
        let [method, query, content_type, authorization, body] = parts[..] else {
            panic!("seed {} is not in the five-part format", path.display())
        };
        let method = String::from_utf8_lossy(method);
        let target = match query {
            b"" => "/token".to_owned(),
            q => format!("/token?{}", String::from_utf8_lossy(q)),
        };
        let mut headers = vec![];
        if !content_type.is_empty() {
            headers.push(("Content-Type", String::from_utf8_lossy(content_type).into()));
        }
        if !authorization.is_empty() {
            headers.push((
                "Authorization",
                String::from_utf8_lossy(authorization).into(),
            ));
        }
        push("fuzz seed", raw_request(&method, &target, &headers, body));
    }
    samples
}

/// Send one raw request and read the whole answer (the request asks to close).
async fn send(gate: &GateProcess, raw: &[u8]) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(gate.addr).await.ok()?;
    stream.write_all(raw).await.ok()?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    let _ = read.await;
    let text = String::from_utf8_lossy(&answer);
    text.lines().next()?.split_whitespace().nth(1)?.parse().ok()
}

/// Header names (lower case) and values, in order.
type Headers = Vec<(String, Vec<u8>)>;

/// The request line, headers and body of a generated request (the format `raw_request`
/// writes).
fn split_raw(raw: &[u8]) -> (String, String, Headers, &[u8]) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header block");
    let head = &raw[..end];
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let headers = lines
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            Some((name, line[colon + 1..].trim_ascii().to_vec()))
        })
        .collect();
    (method, target, headers, &raw[end + 4..])
}

/// The gate's classifier on a generated request, as the proxy calls it.
fn classify_raw(raw: &[u8]) -> Option<String> {
    use refresh_gate::oauth::grant::{classify, Classification, GrantRules, TokenHeaders};
    let (method, target, headers, body) = split_raw(raw);
    let headers = TokenHeaders::collect(|name| {
        headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .collect()
    });
    let query = target.split_once('?').map(|(_, q)| q);
    let request = headers.request(&method, query, false, body);
    match classify(&request, &GrantRules::default()) {
        Classification::Refresh(grant) => {
            Some(String::from_utf8_lossy(grant.token.expose()).into_owned())
        }
        _ => None,
    }
}

async fn decided_count(gate: &GateProcess) -> f64 {
    let (_, text) = gate.admin_get("/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("refresh_gate_refresh_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_any_real_parser_reads_as_a_refresh_grant_is_forwarded_untouched() {
    let samples = corpus();
    assert!(samples.len() > 1500, "{} samples", samples.len());
    let mut oracles = Oracles::start();
    let raws: Vec<&[u8]> = samples.iter().map(|s| s.raw.as_slice()).collect();
    let verdicts = oracles.judge(&raws);
    assert_eq!(verdicts.len(), samples.len());

    let idp = FakeIdp::start().await;
    let options = GateConfig::new(idp.url()).request_timeout(secs(2));
    let gate = GateProcess::start(&options).await;

    let mut positives = 0;
    let mut slipped = Vec::new();
    let mut other_token = Vec::new();
    for (sample, verdict) in samples.iter().zip(&verdicts) {
        let Some(gate_token) = classify_raw(&sample.raw) else {
            continue;
        };
        for (stack, read) in verdict.all() {
            if read.refresh && read.token.as_deref() != Some(gate_token.as_str()) {
                other_token.push(format!(
                    "[{}] the gate decides token {gate_token:?}, {stack} reads {:?}:\n{}",
                    sample.class,
                    read.token,
                    String::from_utf8_lossy(&sample.raw).escape_debug()
                ));
            }
        }
    }
    for (sample, verdict) in samples.iter().zip(&verdicts) {
        let readers = verdict.who();
        let calls_before = idp.calls().len();
        let decided_before = if readers.is_empty() {
            0.0
        } else {
            decided_count(&gate).await
        };
        let status = send(&gate, &sample.raw).await;
        if readers.is_empty() {
            continue;
        }
        positives += 1;
        let reached_idp = idp.calls().len() > calls_before;
        let decided = decided_count(&gate).await > decided_before;
        if reached_idp && !decided {
            slipped.push(format!(
                "[{}] read as a refresh grant by {readers:?}, forwarded untouched (status {status:?}):\n{}",
                sample.class,
                String::from_utf8_lossy(&sample.raw).escape_debug()
            ));
        }
    }
    let by_stack = |name: &str| verdicts.iter().filter(|v| v.who().contains(&name)).count();
    eprintln!(
        "differential: {} requests, {positives} read as refresh grants by some stack (node {}, python {}, go {}, java {}, php {}, rack {}), {} slipped past",
        samples.len(),
        by_stack("node"),
        by_stack("python"),
        by_stack("go"),
        by_stack("java"),
        by_stack("php"),
        by_stack("rack"),
        slipped.len()
    );
    // Each stack reads some disguised grants, or the oracles prove nothing.
    for stack in ["node", "python", "go", "java", "php", "rack"] {
        assert!(by_stack(stack) > 10, "{stack} read almost no refresh grant");
    }
    assert!(slipped.is_empty(), "{}", slipped.join("\n\n"));
    assert!(other_token.is_empty(), "{}", other_token.join("\n\n"));
    // The gate still serves.
    assert_eq!(refresh(&gate, &idp.mint(), "k").await.0, 200);
}
