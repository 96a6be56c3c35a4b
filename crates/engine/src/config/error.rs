//! Config diagnostics rendered with miette: every [`ConfigError`] of one file, with its text.

pub use connect::config::error::{line_col, Code, ConfigError};
use miette::{Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceSpan};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// Every diagnostic found in one config file, with the file's name and text for rendering.
#[derive(Clone)]
pub struct ConfigErrors {
    pub path: String,
    pub source: Arc<str>,
    pub errors: Vec<ConfigError>,
}

impl fmt::Debug for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigErrors").field("path", &self.path).field("errors", &self.errors).finish()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error[{}]: {}", e.code, e.message)?;
            if let Some((line, col)) = self.line_col(e) {
                write!(f, " ({}:{line}:{col})", self.path)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// The errors of `source`; a secret written in it (an error [`ConfigError::hiding_secret`])
    /// is replaced by `*`s of the same length, quotes kept, so no rendering can show it.
    pub fn new(path: impl Into<String>, source: impl Into<Arc<str>>, errors: Vec<ConfigError>) -> Self {
        let source: Arc<str> = source.into();
        let secrets: Vec<&Range<usize>> =
            errors.iter().filter(|e| e.hides_secret).filter_map(|e| e.span.as_ref()).collect();
        let source = if secrets.is_empty() {
            source
        } else {
            let mut bytes = source.as_bytes().to_vec();
            for span in secrets {
                let inner = span.start.saturating_add(1)..span.end.saturating_sub(1).min(bytes.len());
                for b in bytes.get_mut(inner).into_iter().flatten() {
                    *b = b'*';
                }
            }
            // Whole characters were replaced byte by byte with ASCII, so this stays UTF-8.
            Arc::from(String::from_utf8_lossy(&bytes).as_ref())
        };
        Self { path: path.into(), source, errors }
    }

    pub fn codes(&self) -> Vec<Code> {
        self.errors.iter().map(|e| e.code).collect()
    }

    /// 1-based line and column (in characters) where `error` points.
    pub fn line_col(&self, error: &ConfigError) -> Option<(usize, usize)> {
        error.span.as_ref().map(|s| line_col(&self.source, s.start))
    }

    /// Human output: for each error `error[DB0xxx]: message`, `  --> file:line:col`, then the
    /// annotated snippet.
    pub fn render(&self) -> String {
        let handler = GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor()).with_width(100);
        let mut out = String::new();
        for e in &self.errors {
            out.push_str(&format!("error[{}]: {}\n", e.code, e.message));
            match self.line_col(e) {
                Some((line, col)) => out.push_str(&format!("  --> {}:{line}:{col}\n", self.path)),
                None => out.push_str(&format!("  --> {}\n", self.path)),
            }
            let diag = Rendered { error: e, src: NamedSource::new(self.path.clone(), self.source.to_string()) };
            let mut snippet = String::new();
            if handler.render_report(&mut snippet, &diag).is_ok() {
                // Our two header lines already carry the code and message: keep miette's
                // snippet and help, drop its own header.
                let lines: Vec<&str> = snippet.lines().collect();
                let start = lines.iter().position(|l| l.contains("╭─[")).unwrap_or(lines.len());
                let body = if start < lines.len() {
                    &lines[start..]
                } else {
                    // No snippet: keep only the help line(s), if any.
                    let help = lines.iter().position(|l| l.trim_start().starts_with("help:")).unwrap_or(lines.len());
                    &lines[help..]
                };
                for l in body {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            out.push('\n');
        }
        out
    }

    /// The diagnostics as miette reports (for callers that render themselves).
    pub fn diagnostics(&self) -> Vec<miette::Report> {
        self.errors
            .iter()
            .map(|e| {
                let d = Owned { error: e.clone(), src: NamedSource::new(self.path.clone(), self.source.to_string()) };
                miette::Report::new(d)
            })
            .collect()
    }
}

struct Rendered<'a> {
    error: &'a ConfigError,
    src: NamedSource<String>,
}

impl fmt::Debug for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.error, f)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error.message)
    }
}

impl std::error::Error for Rendered<'_> {}

impl Diagnostic for Rendered<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.error.code))
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.error.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.error.span.as_ref().map(|_| &self.src as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.error.span.clone()?;
        let label = LabeledSpan::new_with_span(Some(self.error.label.clone()), SourceSpan::from(span));
        Some(Box::new(std::iter::once(label)))
    }
}

struct Owned {
    error: ConfigError,
    src: NamedSource<String>,
}

impl fmt::Debug for Owned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.error, f)
    }
}

impl fmt::Display for Owned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.error.message)
    }
}

impl std::error::Error for Owned {}

impl Diagnostic for Owned {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.error.code))
    }
    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.error.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.error.span.as_ref().map(|_| &self.src as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let span = self.error.span.clone()?;
        let label = LabeledSpan::new_with_span(Some(self.error.label.clone()), SourceSpan::from(span));
        Some(Box::new(std::iter::once(label)))
    }
}
