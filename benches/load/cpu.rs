//! CPU time and memory of a process from /proc: utime + stime of all its threads (fields 14
//! and 15 of `/proc/<pid>/stat`), plus those of its children (nginx's worker under its
//! master), in clock ticks of `sysconf(_SC_CLK_TCK)`.

/// Clock ticks per second of /proc's utime and stime.
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(ticks > 0, "sysconf(_SC_CLK_TCK) failed");
    ticks as u64
}

/// (parent pid, utime + stime in ticks) of `pid`, if it is alive.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let fields: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some((field(4)? as u32, field(14)? + field(15)?))
}

/// The pids whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| stat(child).is_some_and(|(parent, _)| parent == pid))
        .collect()
}

/// Ticks of CPU used so far by `pid` and its children.
pub fn ticks(pid: u32) -> u64 {
    let own = stat(pid).map_or(0, |(_, t)| t);
    own + children(pid)
        .into_iter()
        .filter_map(|c| stat(c).map(|(_, t)| t))
        .sum::<u64>()
}

/// How many children `pid` has (nginx's workers).
pub fn child_count(pid: u32) -> usize {
    children(pid).len()
}

/// Resident memory of `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
