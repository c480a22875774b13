//! Configuration errors: each one says where (line, column, field path) and what is wrong, and
//! they are rendered together, the way a compiler shows its errors.

use std::fmt::Write as _;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigError {
    /// 1-based line (0 when the problem has no place in the file, such as a missing default).
    pub line: u64,
    /// 1-based column.
    pub column: u64,
    /// Field path, e.g. `routes[2].backends[0].backend`.
    pub path: String,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

impl ConfigError {
    /// A new error.
    pub fn new(
        line: u64,
        column: u64,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            line,
            column,
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file, when the configuration came from one.
    pub file: Option<String>,
    /// The problems, in file order.
    pub errors: Vec<ConfigError>,
    source: Option<String>,
}

impl ConfigErrors {
    /// Wraps a list of errors.
    pub fn new(mut errors: Vec<ConfigError>) -> Self {
        errors.sort_by_key(|e| (e.line, e.column));
        Self {
            file: None,
            errors,
            source: None,
        }
    }

    /// Names the file and keeps its text for snippets.
    pub fn in_file(mut self, file: &str, source: &str) -> Self {
        self.file = Some(file.to_owned());
        self.source = Some(source.to_owned());
        self
    }

    /// A rendering with the offending line and a caret under the column for each error.
    pub fn render(&self) -> String {
        let file = self.file.as_deref().unwrap_or("<config>");
        let lines: Vec<&str> = self
            .source
            .as_deref()
            .map(|s| s.lines().collect())
            .unwrap_or_default();
        let mut out = String::new();
        for error in &self.errors {
            let _ = writeln!(
                out,
                "error: {}: {}",
                display_path(&error.path),
                error.message
            );
            if error.line == 0 {
                let _ = writeln!(out, "  --> {file}\n");
                continue;
            }
            let _ = writeln!(out, "  --> {file}:{}:{}", error.line, error.column);
            if let Some(text) = lines.get(error.line as usize - 1) {
                let gutter = error.line.to_string().len();
                let _ = writeln!(out, "{:gutter$} |", "");
                let _ = writeln!(out, "{} | {}", error.line, text);
                let _ = writeln!(
                    out,
                    "{:gutter$} | {}^",
                    "",
                    " ".repeat(error.column.saturating_sub(1) as usize)
                );
            }
            out.push('\n');
        }
        let count = self.errors.len();
        let _ = write!(
            out,
            "{file}: {count} error{}",
            if count == 1 { "" } else { "s" }
        );
        out
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "(top level)" } else { path }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = self.file.as_deref().unwrap_or("<config>");
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(
                f,
                "{file}:{}:{}: {}: {}",
                e.line,
                e.column,
                display_path(&e.path),
                e.message
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The field path of the YAML node at `line` (block style), e.g. `routes[1].retry.on`.
///
/// Serde's errors carry a line and column but no path; this walks up the indentation to find
/// the enclosing keys and sequence positions. Flow-style YAML (`{a: 1}`) yields a partial path.
pub fn yaml_path_at(source: &str, line: u64) -> String {
    let lines: Vec<&str> = source.lines().collect();
    let Some(start) = (line as usize).checked_sub(1).filter(|&l| l < lines.len()) else {
        return String::new();
    };
    let mut parts: Vec<String> = Vec::new();
    let (mut indent, own_key) = key_of(lines[start]);
    if let Some(key) = own_key {
        parts.push(key);
    }
    if is_item(lines[start]) {
        indent = leading(lines[start]);
        parts.push(format!("[{}]", item_index(&lines, start, indent)));
    }
    let mut row = start;
    while indent > 0 && row > 0 {
        row -= 1;
        let text = lines[row];
        if text.trim().is_empty() || text.trim_start().starts_with('#') {
            continue;
        }
        if is_item(text) && leading(text) < indent {
            // A sequence item containing us. Its own key (`- id: x`) is a sibling, not a parent.
            indent = leading(text);
            parts.push(format!("[{}]", item_index(&lines, row, indent)));
            continue;
        }
        let (this_indent, key) = key_of(text);
        if this_indent < indent {
            if let Some(key) = key {
                parts.push(key);
            }
            indent = this_indent;
        }
    }
    let mut path = String::new();
    for part in parts.iter().rev() {
        if part.starts_with('[') || path.is_empty() {
            path.push_str(part);
        } else {
            path.push('.');
            path.push_str(part);
        }
    }
    path
}

fn is_item(line: &str) -> bool {
    line.trim_start().starts_with("- ") || line.trim() == "-"
}

/// The position of the sequence item starting at `row` among its siblings at `indent`.
fn item_index(lines: &[&str], row: usize, indent: usize) -> usize {
    lines[..row]
        .iter()
        .rev()
        .take_while(|l| l.trim().is_empty() || leading(l) >= indent)
        .filter(|l| leading(l) == indent && is_item(l))
        .count()
}

fn leading(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The indentation of a line's key (after any `- `) and the key, if the line has one.
fn key_of(line: &str) -> (usize, Option<String>) {
    let mut indent = leading(line);
    let mut rest = line.trim_start();
    while let Some(after) = rest.strip_prefix("- ") {
        indent += 2 + (after.len() - after.trim_start().len());
        rest = after.trim_start();
    }
    let key = rest
        .split_once(':')
        .map(|(k, _)| k.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
        .filter(|k| {
            !k.is_empty() && !k.contains(' ') && !k.starts_with('{') && !k.starts_with('[')
        });
    (indent, key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_derived_from_indentation() {
        let yaml = "listeners:\n  - address: 1\nroutes:\n  - id: a\n    match: {}\n  - id: b\n    retry:\n      on:\n        - reset\n        - bogus\n";
        assert_eq!(yaml_path_at(yaml, 2), "listeners[0].address");
        assert_eq!(yaml_path_at(yaml, 6), "routes[1].id");
        assert_eq!(yaml_path_at(yaml, 8), "routes[1].retry.on");
        assert_eq!(yaml_path_at(yaml, 10), "routes[1].retry.on[1]");
    }
}
