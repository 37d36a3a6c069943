//! The Kubernetes manifests and the Dockerfile, checked statically (no container engine or
//! cluster runs here): every manifest parses, and ports, paths and probes agree with the
//! gate configuration they ship; the PrometheusRule is the promtool-tested alerts.yml.

use refresh_gate::config::Config;
use serde_yaml::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

fn manifest(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes").join(name)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn gate_config() -> Config {
    let configmap = manifest("configmap.yaml");
    let toml = configmap["data"]["refresh-gate.toml"].as_str().unwrap();
    Config::parse(toml).expect("the ConfigMap's TOML is a valid gate configuration")
}

fn port_of(address: &str) -> u64 {
    address.parse::<SocketAddr>().unwrap().port() as u64
}

fn sidecar() -> Value {
    let deployment = manifest("sidecar-patch.yaml");
    deployment["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "refresh-gate")
        .expect("a refresh-gate container")
        .clone()
}

fn named_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no port {name}"))["containerPort"]
        .as_u64()
        .unwrap()
}

#[test]
fn every_manifest_parses() {
    let dir = root().join("deploy/kubernetes");
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let value: Value =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            value["apiVersion"].is_string() && value["kind"].is_string(),
            "{}",
            path.display()
        );
        count += 1;
    }
    assert!(count >= 7);
}

#[test]
fn the_shipped_gate_configuration_is_complete() {
    let config = gate_config();
    assert_eq!(config.upstream.token_paths, ["/auth/idp/k8sIdp/token"]);
    assert!(config.listen.tls_cert_file.is_some() && config.listen.tls_key_file.is_some());
    assert!(
        config.upstream.tls_server_name.is_some(),
        "verify OpenUnison by name"
    );
    let drain = config.listen.drain + config.listen.shutdown_grace;
    let deployment = manifest("sidecar-patch.yaml");
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        drain.as_secs() < grace,
        "drain + shutdown_grace must fit the pod's grace period"
    );
}

#[test]
fn container_ports_and_probes_match_the_configuration() {
    let config = gate_config();
    let container = sidecar();
    assert_eq!(
        named_port(&container, "gate-https"),
        port_of(&config.listen.address)
    );
    let admin = config.admin.as_ref().expect("an admin listener");
    assert_eq!(
        named_port(&container, "gate-admin"),
        port_of(&admin.address)
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "gate-admin");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "gate-admin");
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mount = container["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(args, ["--config", &format!("{mount}/refresh-gate.toml")]);
    // Certificate files live where the TLS Secret is mounted.
    let tls_mount = container["volumeMounts"][1]["mountPath"].as_str().unwrap();
    for file in [
        &config.listen.tls_cert_file,
        &config.listen.tls_key_file,
        &config.upstream.ca_file,
    ] {
        assert!(file.as_ref().unwrap().starts_with(tls_mount), "{file:?}");
    }
}

#[test]
fn the_container_runs_as_non_root_with_a_read_only_root() {
    let security = &sidecar()["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert!(security["runAsUser"].as_u64().unwrap() > 0);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    assert!(sidecar()["resources"]["limits"]["memory"].is_string());
}

#[test]
fn the_service_targets_the_gate_and_only_the_gate_is_reachable() {
    let service = manifest("service-patch.yaml");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "gate-https");
    let config = gate_config();
    let policy = manifest("networkpolicy.yaml");
    let allowed: Vec<u64> = policy["spec"]["ingress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|rule| rule["ports"].as_sequence().unwrap().iter())
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert!(allowed.contains(&port_of(&config.listen.address)));
    assert!(allowed.contains(&port_of(&config.admin.as_ref().unwrap().address)));
    let openunison = config
        .upstream
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!(
        !allowed.contains(&openunison),
        "the IdP's own port is reachable around the gate"
    );
}

#[test]
fn prometheus_scrapes_the_admin_port_as_job_refresh_gate() {
    let monitor = manifest("servicemonitor.yaml");
    let metrics = manifest("metrics-service.yaml");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        metrics["spec"]["ports"][0]["name"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    let job_label = monitor["spec"]["jobLabel"].as_str().unwrap();
    assert_eq!(metrics["metadata"]["labels"][job_label], "refresh-gate");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        metrics["metadata"]["labels"]["app.kubernetes.io/name"]
    );
}

#[test]
fn the_prometheus_rule_is_the_tested_alerts_file() {
    let rule = manifest("prometheusrule.yaml");
    let alerts: Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("conf/prometheus/alerts.yml")).unwrap(),
    )
    .unwrap();
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(
        rule["spec"]["groups"], alerts["groups"],
        "deploy/kubernetes/prometheusrule.yaml is stale: run scripts/gen-prometheusrule"
    );
}

#[test]
fn the_dockerfile_is_multi_stage_pinned_and_non_root() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "build and runtime stages");
    for from in &froms {
        let image = from.split_whitespace().nth(1).unwrap();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest",
            "unpinned base image: {from}"
        );
    }
    assert!(froms[1].contains("distroless"), "a small runtime image");
    let user = text
        .lines()
        .find(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") || user.contains("nonroot"));
    assert!(!user.trim_start_matches("USER ").starts_with('0'), "{user}");
    assert!(text.contains(
        "COPY --from=build /src/target/release/refresh-gate /usr/local/bin/refresh-gate"
    ));
    assert!(text.contains("ENTRYPOINT [\"/usr/local/bin/refresh-gate\"]"));
    assert!(text.contains("cmake"), "Pingora's build needs cmake");
}
