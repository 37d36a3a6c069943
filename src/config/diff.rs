//! What a reload may change while the gate runs and what needs a restart, compared on the
//! file as written (a changed path is a change, a rewritten file behind the same path is
//! not).

use super::schema::Config;

impl Config {
    /// The keys that differ between `self` (running) and `new` and need a restart to change:
    /// listeners, upstream, store, admin, audit, the log format and the store's capacities.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let (r, n) = (&self.rotation, &new.rotation);
        [
            ("listen", self.listen != new.listen),
            ("upstream", self.upstream != new.upstream),
            ("store", self.store != new.store),
            ("admin", self.admin != new.admin),
            ("audit", self.audit != new.audit),
            ("log.format", self.log.format != new.log.format),
            ("rotation.tombstone_ttl", r.tombstone_ttl != n.tombstone_ttl),
            (
                "rotation.max_tombstones",
                r.max_tombstones != n.max_tombstones,
            ),
            ("rotation.max_in_flight", r.max_in_flight != n.max_in_flight),
            (
                "rotation.max_detached_per_source",
                r.max_detached_per_source != n.max_detached_per_source,
            ),
        ]
        .into_iter()
        .filter_map(|(key, differs)| differs.then_some(key))
        .collect()
    }

    /// Take the reloadable part of `new` (`[rotation]`, `[clients.*]`, `log.level`): what
    /// the running gate is compared with at the next reload.
    pub fn adopt_reloadable(&mut self, new: Config) {
        self.rotation = new.rotation;
        self.clients = new.clients;
        self.log.level = new.log.level;
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const MINIMAL: &str = "[listen]\naddress = \"127.0.0.1:9480\"\n[upstream]\n\
        url = \"http://127.0.0.1:8080\"\ntoken_paths = [\"/token\"]\n";

    fn with(extra: &str) -> Config {
        Config::parse(&format!("{MINIMAL}{extra}")).unwrap()
    }

    #[test]
    fn reload_tells_safe_changes_from_restart_only_ones() {
        let running = with("");
        let safe = with(
            "[rotation]\ngrace_period = \"10s\"\nmax_reuses = 3\nclose_on_successor_use = false\n\
             min_replay_window = \"1s\"\n[clients.k9s]\nmax_reuses = 1\n[log]\nlevel = \"warn\"\n",
        );
        assert!(running.restart_only_changes(&safe).is_empty());
        let unsafe_change = with("[rotation]\nmax_tombstones = 5\n");
        assert_eq!(
            running.restart_only_changes(&unsafe_change),
            ["rotation.max_tombstones"]
        );
        let moved = Config::parse(&MINIMAL.replace("9480", "9490")).unwrap();
        assert_eq!(running.restart_only_changes(&moved), ["listen"]);
        let many = with("[log]\nformat = \"json\"\n[audit]\nsubject_claim = \"email\"\n");
        assert_eq!(running.restart_only_changes(&many), ["audit", "log.format"]);
    }

    #[test]
    fn adopting_takes_only_the_reloadable_keys() {
        let mut running = with("");
        let new = with(
            "[rotation]\nmax_reuses = 3\n[clients.k9s]\nmax_reuses = 1\n[log]\nlevel = \"warn\"\n\
             format = \"json\"\n",
        );
        running.adopt_reloadable(new.clone());
        assert_eq!(running.rotation, new.rotation);
        assert_eq!(running.clients, new.clients);
        assert_eq!(running.log.level, "warn");
        assert_eq!(running.restart_only_changes(&new), ["log.format"]);
    }
}
