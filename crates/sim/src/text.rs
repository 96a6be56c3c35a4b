//! Reading the query languages the simulators answer (OData `$filter`, SuiteQL, COQL): their
//! shared lexical step.

/// Splits `text` at every ` word ` (spaces around it, any case) outside single-quoted literals
/// and brackets; the parts come trimmed.
pub fn split_keyword(text: &str, word: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let needle = format!(" {} ", word.to_ascii_lowercase());
    let (mut parts, mut start, mut depth, mut quoted) = (Vec::new(), 0, 0i32, false);
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            _ if !quoted && depth == 0 && lower[i..].starts_with(&needle) => {
                parts.push(text[start..i].trim().to_owned());
                i += needle.len();
                start = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parts.push(text[start..].trim().to_owned());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_inside_quotes_or_brackets_do_not_split() {
        assert_eq!(split_keyword("a = 1 AND b = 'x and y'", "and"), ["a = 1", "b = 'x and y'"]);
        assert_eq!(split_keyword("(a or b) or c", "or"), ["(a or b)", "c"]);
        assert_eq!(split_keyword("brand = 1", "and"), ["brand = 1"]);
    }
}
