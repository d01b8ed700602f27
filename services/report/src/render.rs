//! How a report's text reaches its reader safely. Every cell of a report can hold what a
//! client sent (a team, a user, a workflow, a tag), so each format escapes it for where it
//! is read: HTML entities for a browser, quoting and a formula guard for a spreadsheet, and
//! visible escapes for a terminal (a control character must not move the cursor or forge a
//! line).
use std::fmt::Write;

/// Text safe inside HTML elements and double- or single-quoted attributes.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One CSV record of `cells` (RFC 4180 quoting by the `csv` crate, ending in `\n`). A text
/// cell a spreadsheet would run as a formula (it starts with `=`, `+`, `-`, `@`, a tab or a
/// carriage return, OWASP's list, and is not a number) gets a leading `'`, which
/// spreadsheets show as text.
pub fn csv_record<S: AsRef<str>>(cells: &[S]) -> String {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(Vec::new());
    writer
        .write_record(cells.iter().map(|c| csv_cell(c.as_ref()).into_owned()))
        .expect("writing to memory does not fail");
    let bytes = writer
        .into_inner()
        .expect("writing to memory does not fail");
    String::from_utf8(bytes).expect("the cells were text")
}

fn csv_cell(text: &str) -> std::borrow::Cow<'_, str> {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula && text.parse::<f64>().is_err() {
        format!("'{text}").into()
    } else {
        text.into()
    }
}

/// Text for a terminal: control characters (newlines, escape sequences, NUL) written as
/// visible escapes (`\n`, `\u{1b}`), everything else as it is.
pub fn terminal(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "{}", c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_markup_and_both_quotes() {
        assert_eq!(
            html("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }

    #[test]
    fn csv_quotes_every_cell_and_guards_formulas() {
        let line = csv_record(&[
            "=HYPERLINK(\"http://x\")",
            "-12.5",
            "-cmd",
            "a,\"b\"\nc",
            "'; DROP TABLE llm_calls; --",
        ]);
        assert_eq!(
            line,
            "\"'=HYPERLINK(\"\"http://x\"\")\",\"-12.5\",\"'-cmd\",\"a,\"\"b\"\"\nc\",\"'; DROP TABLE llm_calls; --\"\n"
        );
        // A CSV reader gets the cells back (the guarded ones with their `'`).
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_bytes());
        let record = reader.records().next().unwrap().unwrap();
        assert_eq!(&record[3], "a,\"b\"\nc");
        assert_eq!(&record[1], "-12.5");
    }

    #[test]
    fn terminal_shows_control_characters() {
        assert_eq!(
            terminal("red\u{1b}[31m\nnext\u{0}"),
            "red\\u{1b}[31m\\nnext\\u{0}"
        );
        assert_eq!(terminal("plain – text"), "plain – text");
    }
}
