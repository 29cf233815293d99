//! HTML building: every value goes through [`escape`]; pages are plain strings.

use std::fmt::Write;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
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

/// Escapes text for a URL path segment (query values and ids in links).
pub fn url_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A link inside the explorer: `path` is relative to `/explorer/`, `label` is text.
pub fn link(path: &str, label: &str) -> String {
    format!(
        "<a href=\"{}/{}\">{}</a>",
        crate::BASE_PATH,
        escape(path),
        escape(label)
    )
}

pub fn block_link(height: u64) -> String {
    link(&format!("block/{height}"), &format!("#{height}"))
}

pub fn tx_link(hash: &str) -> String {
    link(&format!("tx/{}", url_segment(hash)), &short(hash))
}

pub fn account_link(address: &str) -> String {
    link(&format!("account/{}", url_segment(address)), address)
}

pub fn provider_link(address: &str) -> String {
    link(
        &format!("provider/{}", url_segment(address)),
        &short(address),
    )
}

pub fn job_link(id: u64) -> String {
    link(&format!("job/{id}"), &format!("job {id}"))
}

pub fn model_link(name: &str) -> String {
    link(&format!("model/{}", url_segment(name)), name)
}

/// The first and last characters of a long hash.
pub fn short(hash: &str) -> String {
    if hash.len() <= 16 || !hash.is_ascii() {
        return hash.to_string();
    }
    format!("{}…{}", &hash[..8], &hash[hash.len() - 6..])
}

/// A base-unit amount (decimal string) in PZA with 9 decimals; anything else is shown as is.
pub fn pza(base_units: &str) -> String {
    let Ok(units) = base_units.parse::<u128>() else {
        return escape(base_units);
    };
    const UNITS_PER_PZA: u128 = 1_000_000_000;
    let whole = units / UNITS_PER_PZA;
    let fraction = units % UNITS_PER_PZA;
    if fraction == 0 {
        format!("{whole} PZA")
    } else {
        let digits = format!("{fraction:09}");
        format!("{whole}.{} PZA", digits.trim_end_matches('0'))
    }
}

/// A two-column table of already-rendered HTML cells: `(label, html)`.
pub fn facts(rows: &[(&str, String)]) -> String {
    let mut out = String::from("<table class=\"facts\">");
    for (label, value) in rows {
        let _ = write!(out, "<tr><th>{}</th><td>{value}</td></tr>", escape(label));
    }
    out.push_str("</table>");
    out
}

/// A table with a header row; cells are already-rendered HTML.
pub fn table(id: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table class=\"list\" id=\"{}\"><thead><tr>", escape(id));
    for h in headers {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// Pretty JSON, escaped, in a `<pre>`.
pub fn json_block(value: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    format!("<pre class=\"json\">{}</pre>", escape(&text))
}

/// The whole document around a page's body.
pub fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · Piazza explorer</title>\
<link rel=\"stylesheet\" href=\"{base}/assets/style.css\"></head><body>\
<header><a class=\"brand\" href=\"{base}\">Piazza explorer</a>\
<nav>{models} {storage} {agents} {search}</nav>\
<form action=\"{base}/search\" method=\"get\"><input name=\"q\" maxlength=\"{query_max}\" \
placeholder=\"height, block or tx hash, pz1… address, job id, model name\" size=\"60\">\
<button>Search</button></form></header><main><h1>{title}</h1>{body}</main>\
<script src=\"{base}/assets/explorer.js\"></script></body></html>",
        title = escape(title),
        base = crate::BASE_PATH,
        models = link("models", "Models"),
        storage = link("storage", "Storage"),
        agents = link("agents", "Agents"),
        search = link("search", "Search"),
        query_max = crate::QUERY_BYTES_MAX,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(url_segment("a b/<c>"), "a%20b%2F%3Cc%3E");
    }

    #[test]
    fn pza_prints_nine_decimals_trimmed() {
        assert_eq!(pza("1500000000"), "1.5 PZA");
        assert_eq!(pza("2000000000"), "2 PZA");
        assert_eq!(pza("1"), "0.000000001 PZA");
        assert_eq!(pza("<x>"), "&lt;x&gt;");
    }
}
