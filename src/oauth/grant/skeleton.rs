//! The loosest reading any IdP stack gives a parameter name or a `grant_type` value, so the
//! gate can tell "exactly `grant_type`" from "something a lenient parser reads as
//! `grant_type`": Java's `trim()` (every character up to U+0020), Unicode spaces and
//! invisible format characters, Unicode case folding (Go's `EqualFold` folds `ſ` to `s` and
//! the Kelvin sign to `k`; Java's `equalsIgnoreCase` folds `ı` to `i`), and compatibility
//! forms (full-width letters, `＿`).

use unicode_normalization::UnicodeNormalization;

/// A character some stack drops when it trims or compares: controls, spaces, and invisible
/// format characters (zero-width spaces and joiners, the byte-order mark, soft hyphens).
pub fn is_ignorable(c: char) -> bool {
    c <= ' '
        || c.is_whitespace()
        || c.is_control()
        || matches!(
            c,
            '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}'
                | '\u{17b5}' | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{ffa0}' | '\u{fff0}'..='\u{fff8}'
        )
        || ('\u{e0000}'..='\u{e0fff}').contains(&c)
}

/// Fold one string: compatibility-normalise (NFKC), drop combining marks left over from
/// folding (`İ` lower-cases to `i` + U+0307), and fold case through upper then lower case.
pub fn fold(s: &str) -> String {
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.nfkc()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .filter(|c| !is_combining_dot(*c))
        .collect()
}

fn is_combining_dot(c: char) -> bool {
    matches!(c, '\u{0300}'..='\u{036f}')
}

/// The skeleton of a name or value: folded, with every ignorable character removed
/// (wherever it stands: the gate refuses rather than guess which ones a parser trims).
pub fn skeleton(s: &str) -> String {
    fold(s).chars().filter(|c| !is_ignorable(*c)).collect()
}

/// The names other stacks read for a parameter name: PHP's `parse_str` (leading spaces
/// dropped; `.`, space and the first unmatched `[` become `_`; `a[b]` is an array under
/// `a`), Rack's nested query (leading `[`/`]` and a trailing `]` dropped, `a[b]` nested under
/// `a`), and a generic rewrite of every separator to `_`.
pub fn rewritten_names(name: &str) -> [String; 4] {
    let php = {
        let trimmed = name.trim_start_matches(' ');
        match trimmed.find('[') {
            Some(open) if trimmed[open..].contains(']') => trimmed[..open].replace(['.', ' '], "_"),
            Some(open) => {
                let mut rewritten = trimmed[..open].replace(['.', ' '], "_");
                rewritten.push('_');
                rewritten.push_str(&trimmed[open + 1..]);
                rewritten
            }
            None => trimmed.replace(['.', ' '], "_"),
        }
    };
    let rack = {
        let stripped = name.trim_start_matches(['[', ']']);
        let base = stripped.split('[').next().unwrap_or("");
        base.strip_suffix(']').unwrap_or(base).to_owned()
    };
    let generic = name.replace(['.', ' ', '[', ']', '-'], "_");
    [
        php,
        rack,
        generic,
        name.split(['[', '.', '\0']).next().unwrap_or("").to_owned(),
    ]
}

/// The words a space-splitting stack (fosite) reads in a value, each folded.
pub fn words(s: &str) -> impl Iterator<Item = String> + '_ {
    fold(s)
        .split(|c: char| is_ignorable(c) || matches!(c, ',' | ';' | '+'))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect::<Vec<_>>()
        .into_iter()
}

/// True when `value` is not exactly `target` but some stack reads it as `target`, or as a
/// list that holds it (`target` is a lower-case ASCII identifier).
pub fn disguises(value: &str, target: &str) -> bool {
    value != target && (skeleton(value) == target || words(value).any(|w| w == target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_spaces_of_every_kind_are_seen_through() {
        for value in [
            "refresh_token ",
            " refresh_token",
            "refresh_token\t",
            "\u{0}refresh_token",
            "refresh_token\u{1f}",
            "refresh_token\u{a0}",
            "\u{feff}refresh_token",
            "refresh\u{200b}_token",
            "refresh_token\u{3000}",
        ] {
            assert!(disguises(value, "refresh_token"), "{value:?}");
        }
    }

    #[test]
    fn unicode_case_folding_is_seen_through() {
        for value in [
            "REFRESH_TOKEN",
            "Refresh_Token",
            "refreſh_token",
            "refresh_to\u{212a}en",
            "ｒｅｆｒｅｓｈ＿ｔｏｋｅｎ",
        ] {
            assert!(disguises(value, "refresh_token"), "{value:?}");
        }
        assert_eq!(skeleton("cl\u{131}ent_\u{130}d"), "client_id");
    }

    #[test]
    fn lists_that_hold_the_target_are_seen_through() {
        for value in [
            "refresh_token authorization_code",
            "authorization_code refresh_token",
            "refresh_token,password",
            "a+refresh_token",
        ] {
            assert!(disguises(value, "refresh_token"), "{value:?}");
        }
    }

    #[test]
    fn php_and_rack_rewrites_are_seen() {
        for name in [
            "grant.type",
            "grant type",
            "grant[type",
            "grant_type[]",
            "grant_type[x]",
            "grant_type]",
            "[grant_type]",
            " grant_type",
            "grant-type",
            "grant_type\0x",
        ] {
            let rewritten = rewritten_names(name);
            assert!(
                rewritten.iter().any(|r| r == "grant_type"),
                "{name}: {rewritten:?}"
            );
        }
        assert!(rewritten_names("grant_type")
            .iter()
            .all(|r| r == "grant_type"));
        assert!(rewritten_names("pre-authorized_code")
            .iter()
            .all(|r| r != "grant_type"));
    }

    #[test]
    fn the_exact_value_and_other_values_are_not_disguises() {
        assert!(!disguises("refresh_token", "refresh_token"));
        assert!(!disguises("authorization_code", "refresh_token"));
        assert!(!disguises("refresh_tokens", "refresh_token"));
        assert!(!disguises("", "refresh_token"));
    }
}
