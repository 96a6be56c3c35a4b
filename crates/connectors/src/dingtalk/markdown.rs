//! Vendor text inside DingTalk messages: a customer name, a note or a subject from a CRM or
//! ERP record is data, never markup. DingTalk renders a markdown subset in `markdown` messages,
//! action cards and card fields (reference §2.2: headings, `>` quotes, `**bold**`, `*italic*`,
//! `[links](url)`, `![images](url)`, lists, `<font>`), and highlights `@userid` / `@mobile`
//! mentions. Whoever can edit a customer record must not be able to put a link, an image or an
//! `@all` into a finance group through it.
//!
//! [`escape_markdown`] backslash-escapes what could start markup (CommonMark escapes; that
//! DingTalk's renderer honours every one of them is UNVERIFIED, so the characters that would do
//! harm are also the ones least likely to appear in names) and [`neutralise_mentions`] breaks an
//! `@` where a mention could begin with a zero-width joiner, so it still reads the same.

/// Characters that start inline markup anywhere in a line: links and images (`[`, `]`), bold
/// and italic (`*`), code (`` ` ``), HTML such as `<font>` (`<`), and the escape itself.
const INLINE: &[char] = &['\\', '[', ']', '*', '`', '<'];
/// Characters that start block markup at the beginning of a line: headings, quotes, lists.
const LINE_START: &[char] = &['#', '>', '-', '+'];
/// Placed after an `@` that could begin a mention: invisible, but the text no longer matches.
const WORD_JOINER: char = '\u{2060}';

/// `text` as literal text inside DingTalk markdown: markup characters escaped, mentions broken.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut line_start = true;
    let mut previous: Option<char> = None;
    for c in text.chars() {
        if INLINE.contains(&c) || (line_start && LINE_START.contains(&c)) {
            out.push('\\');
        }
        push_breaking_mention(&mut out, c, previous);
        line_start = c == '\n' || (line_start && (c == ' ' || c == '\t'));
        previous = Some(c);
    }
    out
}

/// Pushes `c`, and after an `@` where a mention could begin (text start, after a space or a
/// parenthesis) the word joiner; an address such as `a@b.hk` is left alone.
fn push_breaking_mention(out: &mut String, c: char, previous: Option<char>) {
    out.push(c);
    if c == '@' && previous.is_none_or(|p| p.is_whitespace() || p == '(') {
        out.push(WORD_JOINER);
    }
}

/// `text` for a plain-text message: nothing renders as markup there, but `@all` or `@<mobile>`
/// at a word start could still read as a mention.
pub fn neutralise_mentions(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    let mut previous: Option<char> = None;
    for c in text.chars() {
        push_breaking_mention(&mut out, c, previous);
        previous = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_customer_named_like_a_link_renders_as_text() {
        assert_eq!(escape_markdown("[click](http://evil)"), "\\[click\\](http://evil)");
        assert_eq!(escape_markdown("![x](http://evil/p.png)"), "!\\[x\\](http://evil/p.png)");
        assert_eq!(
            escape_markdown("**urgent** <font color=#f00>pay now</font>"),
            "\\*\\*urgent\\*\\* \\<font color=#f00>pay now\\</font>"
        );
        assert_eq!(escape_markdown("a \\[b"), "a \\\\\\[b");
    }

    #[test]
    fn block_markup_is_escaped_only_at_a_line_start() {
        assert_eq!(escape_markdown("# Pay now\n> quoted\n- item"), "\\# Pay now\n\\> quoted\n\\- item");
        assert_eq!(escape_markdown("  # indented"), "  \\# indented");
        assert_eq!(escape_markdown("Unit 3-5, Kwun Tong > Tsuen Wan #2"), "Unit 3-5, Kwun Tong > Tsuen Wan #2");
        assert_eq!(escape_markdown("2026-12-07"), "2026-12-07");
    }

    #[test]
    fn mentions_are_broken_where_they_could_start_and_addresses_are_left_alone() {
        assert_eq!(escape_markdown("@all please approve"), format!("@{WORD_JOINER}all please approve"));
        assert_eq!(neutralise_mentions("hi @13800138000"), format!("hi @{WORD_JOINER}13800138000"));
        assert_eq!(neutralise_mentions("mei.ling@harbour.hk"), "mei.ling@harbour.hk");
        assert_eq!(escape_markdown("Kowloon Precision Components Ltd"), "Kowloon Precision Components Ltd");
        assert_eq!(neutralise_mentions("陳大文 (@所有人)"), format!("陳大文 (@{WORD_JOINER}所有人)"));
    }
}
