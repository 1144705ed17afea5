//! Token identity patterns: exact text, where `*` stands for any run of characters.

/// Whether `value` matches `pattern`. Matching is case-sensitive; `*` matches any run of
/// characters, including none; every other character matches itself. Leading and trailing
/// blanks of `value` are ignored, because PKCS#11 pads these fields with spaces.
pub(crate) fn matches(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.trim().chars().collect();
    // Greedy matching with one backtrack point (the last `*`): linear in practice.
    let (mut pi, mut vi) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, vi));
                pi += 1;
            }
            Some(c) if Some(c) == v.get(vi) => {
                pi += 1;
                vi += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    pi = sp + 1;
                    vi = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|c| *c == '*'))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn exact_and_wildcards() {
        assert!(matches("SoftHSM v2", "SoftHSM v2"));
        assert!(matches("SoftHSM v2", "SoftHSM v2      "));
        assert!(!matches("SoftHSM v2", "SoftHSM v3"));
        assert!(!matches("softhsm v2", "SoftHSM v2"));
        assert!(matches("2.6", "2.6"));
        assert!(!matches("2.6", "2.61"));
        assert!(matches("2.*", "2.6"));
        assert!(matches("2.*", "2."));
        assert!(!matches("2.*", "3.6"));
        assert!(matches("*", ""));
        assert!(matches("*", "anything"));
        assert!(matches("Yubi*HSM*", "YubiCo HSM 2"));
        assert!(matches("*a*b", "xxaxxab"));
        assert!(!matches("*a*b", "xxaxxa"));
        assert!(!matches("", "x"));
        assert!(matches("", ""));
    }
}
