//! Markdown text from events and configuration (window, item and department names), escaped
//! so a name is always text: in the bulletin and in the robot alerts a DingTalk or WeCom group
//! shows.

/// Markdown text: the characters that would start markup, tables, links or HTML are escaped,
/// and line breaks become spaces (a name cannot end a table row or start a heading). An
/// underscore inside a word (`deadline_warning`) cannot delimit emphasis and stays as it is.
pub(crate) fn escape(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        let intraword = |c: Option<&char>| c.is_some_and(|c| c.is_alphanumeric());
        match c {
            '_' if intraword(i.checked_sub(1).and_then(|p| chars.get(p)))
                && intraword(chars.get(i + 1)) =>
            {
                out.push(c)
            }
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_intraword_underscores_kept() {
        assert_eq!(
            escape("a|b *c* [x](y) <b> #1 `c` \\ _i_ deadline_warning\nz"),
            r"a\|b \*c\* \[x\](y) \<b\> \#1 \`c\` \\ \_i\_ deadline_warning z"
        );
    }
}
