//! A bulletin as a document — a title, headings, paragraphs, tables and charts — rendered to
//! Markdown and to HTML separately, each with its own escaping, so a `|`, `*` or `<` in a window
//! or item name is text in both.

use std::fmt::Write as _;

use crate::markdown::escape as md_escape;

/// A piece of a paragraph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Inline {
    Text(String),
    /// Bold text.
    Strong(String),
}

/// The charts of the HTML page (Markdown leaves them out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chart {
    /// Completed cases and on-time rate over twelve months.
    Trend,
    /// On-time and on-site rate per window.
    WindowRates,
}

/// One block of the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Block {
    /// A section (level 2) or subsection (level 3) heading.
    Heading(u8, String),
    Paragraph(Vec<Inline>),
    Table {
        header: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Chart(Chart),
}

/// A bulletin: its title and blocks in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Document {
    pub(crate) title: String,
    pub(crate) blocks: Vec<Block>,
}

impl Document {
    pub(crate) fn new(title: String) -> Self {
        Self {
            title,
            blocks: Vec::new(),
        }
    }

    pub(crate) fn heading(&mut self, level: u8, text: impl Into<String>) {
        self.blocks.push(Block::Heading(level, text.into()));
    }

    /// A paragraph of plain text.
    pub(crate) fn text(&mut self, text: impl Into<String>) {
        self.blocks
            .push(Block::Paragraph(vec![Inline::Text(text.into())]));
    }

    /// A paragraph that starts with a bold label.
    pub(crate) fn labelled(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.blocks.push(Block::Paragraph(vec![
            Inline::Strong(label.into()),
            Inline::Text(text.into()),
        ]));
    }

    pub(crate) fn table(&mut self, header: &[&str], rows: Vec<Vec<String>>) {
        self.blocks.push(Block::Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows,
        });
    }

    pub(crate) fn chart(&mut self, chart: Chart) {
        self.blocks.push(Block::Chart(chart));
    }

    /// Markdown: blocks separated by a blank line, text escaped.
    pub(crate) fn to_markdown(&self) -> String {
        let mut parts = vec![format!("# {}\n", md_escape(&self.title))];
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => parts.push(format!(
                    "{} {}\n",
                    "#".repeat(usize::from(*level)),
                    md_escape(text)
                )),
                Block::Paragraph(inlines) => {
                    let mut line = String::new();
                    for inline in inlines {
                        match inline {
                            Inline::Text(t) => line.push_str(&md_escape(t)),
                            Inline::Strong(t) => {
                                let _ = write!(line, "**{}**", md_escape(t));
                            }
                        }
                    }
                    parts.push(line + "\n");
                }
                Block::Table { header, rows } => parts.push(md_table(header, rows)),
                Block::Chart(_) => {}
            }
        }
        parts.join("\n")
    }

    /// The HTML body: text escaped, each chart drawn by `chart`.
    pub(crate) fn to_html_body(&self, chart: impl Fn(Chart) -> String) -> String {
        let mut body = format!("<h1>{}</h1>", html_escape(&self.title));
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let _ = write!(body, "<h{level}>{}</h{level}>", html_escape(text));
                }
                Block::Paragraph(inlines) => {
                    body.push_str("<p>");
                    for inline in inlines {
                        match inline {
                            Inline::Text(t) => body.push_str(&html_escape(t)),
                            Inline::Strong(t) => {
                                let _ = write!(body, "<strong>{}</strong>", html_escape(t));
                            }
                        }
                    }
                    body.push_str("</p>");
                }
                Block::Table { header, rows } => {
                    body.push_str("<table>");
                    html_row(&mut body, "th", header);
                    for row in rows {
                        html_row(&mut body, "td", row);
                    }
                    body.push_str("</table>");
                }
                Block::Chart(c) => body.push_str(&chart(*c)),
            }
        }
        body
    }
}

fn md_table(header: &[String], rows: &[Vec<String>]) -> String {
    let cells = |r: &[String]| {
        r.iter()
            .map(|c| md_escape(c))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    let mut out = format!("| {} |\n|{}\n", cells(header), "---|".repeat(header.len()));
    for r in rows {
        let _ = writeln!(out, "| {} |", cells(r));
    }
    out
}

fn html_row(out: &mut String, tag: &str, cells: &[String]) {
    out.push_str("<tr>");
    for c in cells {
        let _ = write!(out, "<{tag}>{}</{tag}>", html_escape(c));
    }
    out.push_str("</tr>");
}

/// HTML text and attribute values.
pub(crate) fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_markup_are_text_in_both_renderings() {
        let mut doc = Document::new("月报".into());
        doc.heading(2, "二、窗口排名");
        let name = "公安|窗口 **加急** <script>alert(1)</script> [链接](http://x) _斜_ a_b";
        doc.table(&["窗口", "件数"], vec![vec![name.to_string(), "3".into()]]);
        doc.labelled("通报表扬", format!("：{name}"));
        let md = doc.to_markdown();
        let row = md.lines().find(|l| l.contains("公安")).unwrap();
        // Two cells: the name's `|` does not split the row.
        assert_eq!(row.matches(" | ").count(), 1, "{row}");
        assert!(
            row.contains(
                r"公安\|窗口 \*\*加急\*\* \<script\>alert(1)\</script\> \[链接\](http://x) \_斜\_ a_b |"
            ),
            "{row}"
        );
        let html = doc.to_html_body(|_| String::new());
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("<td>公安|窗口 **加急** &lt;script&gt;alert(1)&lt;/script&gt; [链接](http://x) _斜_ a_b</td>"), "{html}");
        assert!(
            html.contains("<p><strong>通报表扬</strong>：公安|窗口"),
            "{html}"
        );
    }

    #[test]
    fn blocks_are_separated_by_one_blank_line() {
        let mut doc = Document::new("T".into());
        doc.text("a");
        doc.table(&["x"], vec![vec!["1".into()]]);
        doc.chart(Chart::Trend);
        doc.heading(3, "h");
        assert_eq!(
            doc.to_markdown(),
            "# T\n\na\n\n| x |\n|---|\n| 1 |\n\n### h\n"
        );
        assert_eq!(
            doc.to_html_body(|c| format!("[{c:?}]")),
            "<h1>T</h1><p>a</p><table><tr><th>x</th></tr><tr><td>1</td></tr></table>[Trend]<h3>h</h3>"
        );
    }
}
