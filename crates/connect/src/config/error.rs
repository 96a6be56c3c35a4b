//! Coded config diagnostics (`DB01xx`): a code, a sentence and where in the file it points.
//! Rendering them with the file's text is the engine's (`engine::config::ConfigErrors`).

use std::fmt;
use std::ops::Range;

/// Stable diagnostic codes; each has a page under `docs/errors/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// A key the schema does not know.
    UnknownKey,
    /// A flow delivers to a destination that is not defined.
    UnknownDestination,
    /// A flow listens to a source that is not defined.
    UnknownSource,
    /// A `when` condition does not compile.
    CelCompile,
    /// A message or ordering-key template does not compile.
    Template,
    /// A condition or template references an event field that does not exist.
    UnknownEventField,
    /// A duration string that cannot be parsed (or an empty schedule).
    BadDuration,
    /// Two flows (or other named items) share a name.
    DuplicateName,
    /// A secret's environment variable or file is missing.
    MissingSecret,
    /// The file is not valid TOML.
    TomlSyntax,
    /// A value of the wrong TOML type, or one no more specific code covers (a JSON pointer
    /// without its leading `/`, a connection that cannot be built, ...).
    InvalidValue,
    /// An approval policy, role or identity mapping that cannot work (unknown role, a gap or
    /// overlap in amount bands, an action the ERP cannot take, a role without members).
    Approvals,
    /// A flow keyed on what people do in DingTalk (card clicks, approvals, bot messages) listens
    /// to a source that is not DingTalk: whoever can post to it could forge those decisions.
    DecisionSource,
    /// A vendor endpoint that is not `https://` (credentials and business data would travel in
    /// clear text).
    InsecureEndpoint,
    /// Approval policies without an `[audit] key`, or an audit key too short to be safe.
    AuditKey,
    /// A number or duration outside its allowed range, or not larger than the value it must exceed
    /// (`delivery.jitter`, a count of 0, `lease` not longer than `request_timeout`).
    OutOfRange,
    /// A key this table needs is absent: required by its `type`, by its mode, intake, grant, auth
    /// or op, or by another key that is set.
    MissingKey,
    /// Keys that must go together or exclude each other: one of a pair without the other, both or
    /// neither of two alternatives, a key the chosen grant or auth does not use, a field given twice.
    KeyConflict,
    /// A name, id or list that must have content is empty.
    EmptyValue,
    /// A `type`, mode, intake, op, option or watched object that is not one of the allowed ones.
    UnknownChoice,
    /// A URL, base URL, listen address or host entry that is not well-formed.
    BadAddress,
    /// A name or id not in the form its system requires (an API name, a tenant, account, org or
    /// SAP client id, an API version, a `snake_case` change name).
    BadName,
    /// A time zone, currency, unit of measure, time of day, date or weekday that does not exist.
    BadLocale,
    /// A secret, token, key or certificate that cannot be used: a secret written in the file, a
    /// token too weak to stand in a URL, a key or certificate that does not load.
    BadCredential,
    /// A source or destination that names no ERP/CRM connection, an undefined one, or one that
    /// lacks what it needs.
    BadConnection,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownKey => "DB0101",
            Self::UnknownDestination => "DB0102",
            Self::UnknownSource => "DB0103",
            Self::CelCompile => "DB0104",
            Self::Template => "DB0105",
            Self::UnknownEventField => "DB0106",
            Self::BadDuration => "DB0107",
            Self::DuplicateName => "DB0108",
            Self::MissingSecret => "DB0109",
            Self::TomlSyntax => "DB0110",
            Self::InvalidValue => "DB0111",
            Self::Approvals => "DB0112",
            Self::DecisionSource => "DB0113",
            Self::InsecureEndpoint => "DB0114",
            Self::AuditKey => "DB0115",
            Self::OutOfRange => "DB0116",
            Self::MissingKey => "DB0117",
            Self::KeyConflict => "DB0118",
            Self::EmptyValue => "DB0119",
            Self::UnknownChoice => "DB0120",
            Self::BadAddress => "DB0121",
            Self::BadName => "DB0122",
            Self::BadLocale => "DB0123",
            Self::BadCredential => "DB0124",
            Self::BadConnection => "DB0125",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One diagnostic: a code, a sentence, and where in the file it points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub code: Code,
    pub message: String,
    /// Byte range in the config text; `None` when the problem has no place (e.g. an unreadable file).
    pub span: Option<Range<usize>>,
    /// Short text under the caret.
    pub label: String,
    pub help: Option<String>,
    /// The span holds a secret written in the file: rendering blanks it out.
    pub hides_secret: bool,
}

impl ConfigError {
    pub fn new(code: Code, message: impl Into<String>, span: Option<Range<usize>>, label: impl Into<String>) -> Self {
        Self { code, message: message.into(), span, label: label.into(), help: None, hides_secret: false }
    }

    /// The span holds a secret value: the source shown with this error has it blanked out.
    pub fn hiding_secret(mut self) -> Self {
        self.hides_secret = true;
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// 1-based (line, column) of byte `offset` in `text`; columns count characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}
