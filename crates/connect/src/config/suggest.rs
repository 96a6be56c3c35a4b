//! "Did you mean" hints for names that refer to something defined elsewhere in the file.

/// Edit distance (Levenshtein, in characters).
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `did you mean `x`?` for the closest known name, when one is close enough to be a typo.
pub fn suggest<'a>(name: &str, known: impl IntoIterator<Item = &'a String>) -> Option<String> {
    known
        .into_iter()
        .map(|k| (distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!("did you mean `{k}`?"))
}

/// The known names for a label, or a sentence saying there are none.
pub fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none are defined".to_string()
    } else {
        known.join(", ")
    }
}

/// The label under a key only some types take: "only `a`, `b` and `c` sources take it".
pub fn only_these_take_it(types: &[&str], what: &str) -> String {
    let types: Vec<String> = types.iter().map(|t| format!("`{t}`")).collect();
    match types.split_last() {
        Some((last, [])) => format!("only {last} {what} take it"),
        Some((last, rest)) => format!("only {} and {last} {what} take it", rest.join(", ")),
        None => format!("no {what} take it"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_these_take_it_reads_as_a_sentence() {
        assert_eq!(only_these_take_it(&["a", "b", "c"], "sources"), "only `a`, `b` and `c` sources take it");
        assert_eq!(only_these_take_it(&["a"], "destinations"), "only `a` destinations take it");
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(distance("ops-grp", "ops-group"), 2);
        let known = vec!["ops-group".to_string(), "finance".to_string()];
        assert_eq!(suggest("ops-grp", &known).as_deref(), Some("did you mean `ops-group`?"));
        assert_eq!(suggest("warehouse", &known), None);
        assert_eq!(known_list(&[]), "none are defined");
    }
}
